#!/bin/bash
# mixed.sh BIN LABEL: the simulator's peak shift (2,000 phones, dispatch, warehouse, viewers) against a
# separate serve, with a hostile flood (16 clients posting 100 points as fast as they can, one driver
# each) from 10 s to 30 s. Prints the sim's table, the flood's figures and what the elastic limit did.
BIN=$1; L=$2
D=/tmp/tr/mx-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18099 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18099/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
DT=$(grep -A1 'role = "driver"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/rhFinal sim --scenario peak-shift --target http://127.0.0.1:18099 --tokens $D/data/tokens.toml --duration 40s --quiet --json $D/sim.json > $D/sim.txt 2>&1 &
SP=$!
sleep 10; /tmp/load/load -url http://127.0.0.1:18099 -token $DT -d 20s > $D/flood.txt 2>&1
wait $SP
grep -E "driver  |dispatch|warehouse  |viewer|lost" $D/sim.txt
echo "flood: $(cat $D/flood.txt)"
curl -s 127.0.0.1:18099/metrics -H "Authorization: Bearer $AT" | grep -E '^routehound_driver_rate|^routehound_lane_rejected_total\{lane="driver"'
kill $PID; wait $PID 2>/dev/null
