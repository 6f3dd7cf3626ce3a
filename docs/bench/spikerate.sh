#!/bin/bash
# spikerate.sh BIN LABEL: sim driver-spike (x10) against a separate serve; the sim's table and
# what the elastic driver limit did (refusals, limit) at the end.
BIN=$1; L=$2
D=/tmp/tr/sr-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18098 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18098/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/rhFinal sim --scenario driver-spike --target http://127.0.0.1:18098 --tokens $D/data/tokens.toml --duration 40s --quiet > $D/sim.txt 2>&1
grep -E "dispatch|warehouse  |driver  |lost" $D/sim.txt
curl -s 127.0.0.1:18098/metrics -H "Authorization: Bearer $AT" | grep -E '^routehound_driver_rate|^routehound_lane_rejected_total\{lane="driver"|^routehound_sched_latency'
kill $PID; wait $PID 2>/dev/null
