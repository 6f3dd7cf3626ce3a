#!/bin/bash
# usage: iso.sh BIN LABEL -- dispatch p99 idle, then under a driver flood (and at RATE pts/s)
BIN=$1; L=$2
pkill -f "serve --data /tmp/prof/i-" ; sleep 0.5
rm -rf /tmp/prof/i-$L; mkdir -p /tmp/prof/i-$L
$BIN serve --data /tmp/prof/i-$L --listen 127.0.0.1:18081 > /tmp/prof/iserver-$L.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18081/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' /tmp/prof/i-$L/tokens.toml | grep token | cut -d'"' -f2)
PT=$(grep -A1 'role = "dispatch"' /tmp/prof/i-$L/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' /tmp/prof/i-$L/tokens.toml | grep token | cut -d'"' -f2)
echo -n "$L idle:  "; /tmp/probe/probe -url http://127.0.0.1:18081 -token $PT -d 8s
/tmp/load/load -url http://127.0.0.1:18081 -token $DT -d 12s -rate 20000 > /tmp/prof/iload-$L.txt &
sleep 2; echo -n "$L 20k/s: "; /tmp/probe/probe -url http://127.0.0.1:18081 -token $PT -d 8s; wait %2 2>/dev/null; sleep 1
/tmp/load/load -url http://127.0.0.1:18081 -token $DT -d 12s > /tmp/prof/iload2-$L.txt &
LP=$!
sleep 2; curl -s 127.0.0.1:18081/metrics -H "Authorization: Bearer $AT" > /tmp/prof/m0-$L.txt; echo -n "$L flood: "; /tmp/probe/probe -url http://127.0.0.1:18081 -token $PT -d 8s; curl -s 127.0.0.1:18081/metrics -H "Authorization: Bearer $AT" > /tmp/prof/m1-$L.txt; python3 /tmp/prof/hq.py /tmp/prof/m0-$L.txt /tmp/prof/m1-$L.txt; python3 /tmp/prof/hq.py /tmp/prof/m0-$L.txt /tmp/prof/m1-$L.txt driver; grep "lane_queue_bound{lane=.driver" /tmp/prof/m1-$L.txt; wait $LP; cat /tmp/prof/iload2-$L.txt
curl -s 127.0.0.1:18081/metrics -H "Authorization: Bearer $AT" | grep -E "^routehound_sched|^routehound_lane_latency_seconds_(sum|count)\{lane=\"dispatch" 
kill $PID; wait $PID 2>/dev/null
