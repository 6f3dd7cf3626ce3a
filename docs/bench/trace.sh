#!/bin/bash
# run.sh BIN LABEL: flood + dispatcher probe, capture a 4 s runtime trace
BIN=$1; L=$2
pkill -f "serve --data /tmp/tr/d-" ; sleep 0.5
rm -rf /tmp/tr/d-$L; mkdir -p /tmp/tr/d-$L
$BIN serve --data /tmp/tr/d-$L --listen 127.0.0.1:18091 > /tmp/tr/server-$L.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18091/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' /tmp/tr/d-$L/tokens.toml | grep token | cut -d'"' -f2)
PT=$(grep -A1 'role = "dispatch"' /tmp/tr/d-$L/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' /tmp/tr/d-$L/tokens.toml | grep token | cut -d'"' -f2)
ADMIN=$(grep -o 'admin[^ ]*listen[^ ]*' /tmp/tr/server-$L.log | head -1)
/tmp/load/load -url http://127.0.0.1:18091 -token $DT -d 10s > /tmp/tr/load-$L.txt &
LP=$!
sleep 2; /tmp/probe/probe -url http://127.0.0.1:18091 -token $PT -d 6s > /tmp/tr/probe-$L.txt &
sleep 1; curl -s -o /tmp/tr/trace-$L.out "http://127.0.0.1:18091/debug/pprof/trace?seconds=4" -H "Authorization: Bearer $AT"
wait $LP; cat /tmp/tr/probe-$L.txt /tmp/tr/load-$L.txt
kill $PID; wait $PID 2>/dev/null
ls -la /tmp/tr/trace-$L.out
