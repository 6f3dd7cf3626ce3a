#!/bin/bash
# usage: disk.sh BIN LABEL -- a 20 s driver flood with a dispatcher probe; /sys/block/vda/stat sampled every 20 ms into /tmp/prof/dstat-LABEL.txt (s, KiB written, flushes, in flight)
BIN=$1; L=$2; PORT=18084
pkill -f "serve --data /tmp/prof/d-" ; sleep 0.5
rm -rf /tmp/prof/d-$L; mkdir -p /tmp/prof/d-$L
$BIN serve --data /tmp/prof/d-$L --listen 127.0.0.1:$PORT > /tmp/prof/dserver-$L.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$PORT/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' /tmp/prof/d-$L/tokens.toml | grep token | cut -d'"' -f2)
PT=$(grep -A1 'role = "dispatch"' /tmp/prof/d-$L/tokens.toml | grep token | cut -d'"' -f2)
/tmp/load/load -url http://127.0.0.1:$PORT -token $DT -d 20s > /tmp/prof/dload-$L.txt &
python3 - > /tmp/prof/dstat-$L.txt <<'PY' &
import time
t0=time.time(); prev=None
while time.time()-t0<20:
    f=open('/sys/block/vda/stat').read().split()
    w=int(f[6]); flushes=int(f[15]) if len(f)>15 else 0; inflight=int(f[8])
    if prev: print("%.2f %d %d %d"%(time.time()-t0,(w-prev[0])*512//1024,flushes-prev[1],inflight))
    prev=(w,flushes); time.sleep(0.02)
PY
/tmp/probe/probe -url http://127.0.0.1:$PORT -token $PT -rate 50 -d 18s > /tmp/prof/dprobe-$L.txt
wait %2 %3
cat /tmp/prof/dload-$L.txt /tmp/prof/dprobe-$L.txt
kill $PID; wait $PID 2>/dev/null
du -sh /tmp/prof/d-$L/*
