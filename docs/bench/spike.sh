#!/bin/bash
# spike.sh BIN LABEL: sim driver-spike against a separate serve; 4 s trace inside the spike window
BIN=$1; L=$2
D=/tmp/tr/sp-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18096 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18096/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/rhFinal sim --scenario driver-spike --target http://127.0.0.1:18096 --tokens $D/data/tokens.toml --duration 40s --quiet > $D/sim.txt 2>&1 &
SP=$!
sleep 20; curl -s -o /tmp/tr/trace-sp-$L.out "http://127.0.0.1:18096/debug/pprof/trace?seconds=4" -H "Authorization: Bearer $AT"
sleep 4; curl -s -o /tmp/tr/trace-idle-$L.out "http://127.0.0.1:18096/debug/pprof/trace?seconds=4" -H "Authorization: Bearer $AT"
wait $SP; grep -E "dispatch|warehouse  |driver  " $D/sim.txt
kill $PID; wait $PID 2>/dev/null
