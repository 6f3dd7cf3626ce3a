#!/bin/bash
# cpu.sh BIN LABEL RATE: CPU profile of serve while the load tool posts RATE pts/s
BIN=$1; L=$2; R=$3
D=/tmp/tr/c-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18099 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18099/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/load/load -url http://127.0.0.1:18099 -token $DT -d 14s -rate $R > $D/load.txt &
sleep 3; curl -s -o /tmp/tr/cpu-$L.pb.gz "http://127.0.0.1:18099/debug/pprof/profile?seconds=8" -H "Authorization: Bearer $AT"
wait %2; cat $D/load.txt; kill $PID; wait $PID 2>/dev/null
