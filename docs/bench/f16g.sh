#!/bin/bash
# Inline writes on (F = /tmp/rhF) and off (G = /tmp/rhG): HTTP and 40k/s, bench ingest of F as the client, alternating.
run() { BIN=$1; L=$2; shift 2
  D=/tmp/prof/f16-$L; rm -rf $D; mkdir -p $D
  $BIN serve --data $D/data --listen 127.0.0.1:18090 > $D/server.log 2>&1 &
  PID=$!
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18090/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
  echo "== $L $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) args: $*"
  /tmp/rhF bench ingest --quiet --target http://127.0.0.1:18090 --tokens $D/data/tokens.toml --pid $PID --dir $D --badger-for 2s --fsync-for 1s "$@" 2>&1 | grep -E "durable |server"
  kill $PID; wait $PID 2>/dev/null
}
for i in 1 2; do run /tmp/rhG G-http-$i; run /tmp/rhF F-http-$i; run /tmp/rhG G-rate-$i --rate 40000; run /tmp/rhF F-rate-$i --rate 40000; done
