#!/bin/bash
# usage: heapn.sh BIN LABEL -- a 20 s driver flood (no dispatcher); a heap profile every second into /tmp/tr/h-LABEL/heap-N.pb.gz; prints the four largest
BIN=$1; L=$2
D=/tmp/tr/h-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18098 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18098/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/load/load -url http://127.0.0.1:18098 -token $DT -d 20s > $D/load.txt &
for i in $(seq 2 2 38); do sleep 0.5; curl -s -o $D/heap-$i.pb.gz "http://127.0.0.1:18098/debug/pprof/heap" -H "Authorization: Bearer $AT"; done
wait %2; cat $D/load.txt; kill $PID; wait $PID 2>/dev/null
for f in $D/heap-*.pb.gz; do echo "$(go tool pprof -top -sample_index=inuse_space $f 2>/dev/null | grep -o 'of [0-9.]*[MGk]B total' | head -1) $f"; done | sort -k2 -n | tail -4
