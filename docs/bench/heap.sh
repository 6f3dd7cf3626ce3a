#!/bin/bash
BIN=$1; L=$2
D=/tmp/tr/h-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18098 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18098/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/load/load -url http://127.0.0.1:18098 -token $DT -d 12s > $D/load.txt &
sleep 9; curl -s -o /tmp/tr/heap-$L.pb.gz "http://127.0.0.1:18098/debug/pprof/heap" -H "Authorization: Bearer $AT"
grep VmRSS /proc/$PID/status
curl -s 127.0.0.1:18098/metrics -H "Authorization: Bearer $AT" | grep -E "^go_memstats_heap_inuse_bytes|^go_memstats_heap_sys|^process_resident" 
wait %2; cat $D/load.txt; kill $PID; wait $PID 2>/dev/null
