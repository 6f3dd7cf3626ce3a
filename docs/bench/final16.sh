#!/bin/bash
# Issue 16 A/B: A = before the issue-16 work (/tmp/rhA), B = main (/tmp/rhB); the load generator is
# always B's `bench ingest` (same client), against a server of A or B started here.
run() { # BIN LABEL ARGS...
  BIN=$1; L=$2; shift 2
  D=/tmp/prof/f16-$L; rm -rf $D; mkdir -p $D
  $BIN serve --data $D/data --listen 127.0.0.1:18090 > $D/server.log 2>&1 &
  PID=$!
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18090/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
  echo "== $L $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) args: $*"
  /tmp/rhB bench ingest --quiet --target http://127.0.0.1:18090 --tokens $D/data/tokens.toml --pid $PID --dir $D --badger-for 2s --fsync-for 1s "$@" 2>&1 | grep -E "durable|ratios|server|errors|offered"
  kill $PID; wait $PID 2>/dev/null
}
for i in 1 2 3; do
  run /tmp/rhA A-http-$i
  run /tmp/rhB B-http-$i
  run /tmp/rhA A-rate-$i --rate 40000
  run /tmp/rhB B-rate-$i --rate 40000
  run /tmp/rhA A-stream-$i --stream
  run /tmp/rhB B-stream-$i --stream
done
