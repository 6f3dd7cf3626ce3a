#!/bin/bash
# usage: cpu3.sh BIN LABEL -- a 20 s driver flood and a dispatcher probe at 50/s for 12 s (SLOW=1: each write over 15 ms to stderr with its wall time, in
# /tmp/prof/cslow-LABEL.txt beside the server start in cstart-LABEL.txt, to line up with GODEBUG=gctrace=1 in the server log); prints the server's and the load client's CPU in cores.
BIN=$1; L=$2; PORT=18085
pkill -f "serve --data /tmp/prof/c-" ; sleep 0.5
rm -rf /tmp/prof/c-$L; mkdir -p /tmp/prof/c-$L
date +%s%3N > /tmp/prof/cstart-$L.txt; $BIN serve --data /tmp/prof/c-$L --listen 127.0.0.1:$PORT > /tmp/prof/cserver-$L.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$PORT/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' /tmp/prof/c-$L/tokens.toml | grep token | cut -d'"' -f2)
PT=$(grep -A1 'role = "dispatch"' /tmp/prof/c-$L/tokens.toml | grep token | cut -d'"' -f2)
SPID=$(pgrep -f "serve --data /tmp/prof/c-$L" | tail -1)
/tmp/load/load -url http://127.0.0.1:$PORT -token $DT -d 20s $LOADARGS > /tmp/prof/cload-$L.txt &
LPID=$!
sleep 4
LP=$(pgrep -f "/tmp/load/load -url http://127.0.0.1:$PORT" | head -1)
st() { awk '{print $14+$15}' /proc/$1/stat; }
a1=$(st $SPID); b1=$(st $LP); t1=$(date +%s.%N)
SLOW=1 /tmp/probe/probe -url http://127.0.0.1:$PORT -token $PT -rate 50 -d 12s > /tmp/prof/cprobe-$L.txt 2> /tmp/prof/cslow-$L.txt
a2=$(st $SPID); b2=$(st $LP); t2=$(date +%s.%N)
echo "$L server cpu $(echo "($a2-$a1)/100/($t2-$t1)" | bc -l | cut -c1-5) cores, load client $(echo "($b2-$b1)/100/($t2-$t1)" | bc -l | cut -c1-5) cores"
wait $LPID
echo "$L $(tail -1 /tmp/prof/cload-$L.txt)"; echo "$L $(cat /tmp/prof/cprobe-$L.txt)"
kill $PID; wait $PID 2>/dev/null
