#!/bin/bash
# prof.sh BIN LABEL [bench args]: serve + bench ingest (client in another process) + 8 s CPU profile
BIN=$1; L=$2; shift 2
D=/tmp/p16/$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18090 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18090/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
echo "== $L $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) args: $*"
( sleep 6; curl -s -o /tmp/p16/cpu-$L.pb.gz "http://127.0.0.1:18090/debug/pprof/profile?seconds=8" -H "Authorization: Bearer $AT" ) & CP=$!
/tmp/rhF bench ingest --quiet --target http://127.0.0.1:18090 --tokens $D/data/tokens.toml --pid $PID --dir $D --badger-for 2s --fsync-for 1s --measure 12s "$@" 2>&1 | grep -E "durable |server|ratios"
wait $CP
kill $PID; wait $PID 2>/dev/null
