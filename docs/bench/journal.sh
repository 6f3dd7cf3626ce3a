#!/bin/bash
# usage: journal.sh BIN LABEL -- dispatch latency (client and the engine's own histogram) idle, beside
# drivers at 20,000 points/s, and beside a driver flood; the load and the probe are other processes.
# D=30 probes for 30 s in each phase (the driver load runs D+3 s): a p99 of about 1,400 samples, where 10 s give 480.
# Needs /tmp/load/load (docs/bench/load.go.txt), /tmp/probe/probe (docs/bench/probe.go.txt), /tmp/prof/hq.py and /tmp/prof/hq2.py (docs/bench/hq.py, hq2.py).
# LOADNICE=N runs the driver load at nice N: its CPU stands for the phones', which are not on the box.
BIN=$1; L=$2; PORT=18083; LN="nice -n ${LOADNICE:-0}"
pkill -f "serve --data /tmp/prof/j-" ; sleep 0.5
rm -rf /tmp/prof/j-$L; mkdir -p /tmp/prof/j-$L
$BIN serve --data /tmp/prof/j-$L --listen 127.0.0.1:$PORT > /tmp/prof/jserver-$L.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$PORT/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' /tmp/prof/j-$L/tokens.toml | grep token | cut -d'"' -f2)
PT=$(grep -A1 'role = "dispatch"' /tmp/prof/j-$L/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' /tmp/prof/j-$L/tokens.toml | grep token | cut -d'"' -f2)
M() { curl -s 127.0.0.1:$PORT/metrics -H "Authorization: Bearer $AT" > $1; }
phase() { # name
  M /tmp/prof/jm0-$L.txt
  echo -n "$L $1: "; /tmp/probe/probe -url http://127.0.0.1:$PORT -token $PT -rate 50 -d ${D:-10}s
  M /tmp/prof/jm1-$L.txt
  python3 /tmp/prof/hq.py /tmp/prof/jm0-$L.txt /tmp/prof/jm1-$L.txt | sed "s/^/$L $1: /"; python3 /tmp/prof/hq2.py /tmp/prof/jm0-$L.txt /tmp/prof/jm1-$L.txt fsync_seconds journal_sync_seconds | sed "s/^/$L $1: /"
}
phase idle
$LN /tmp/load/load -url http://127.0.0.1:$PORT -token $DT -d $((${D:-10}+3))s -rate 20000 > /tmp/prof/jload-$L.txt &
sleep 2; phase 20k; wait %2 2>/dev/null; sleep 1
$LN /tmp/load/load -url http://127.0.0.1:$PORT -token $DT -d $((${D:-10}+3))s > /tmp/prof/jload2-$L.txt &
LP=$!
sleep 2; phase flood; wait $LP; echo -n "$L flood load: "; tail -1 /tmp/prof/jload2-$L.txt
kill $PID; wait $PID 2>/dev/null
