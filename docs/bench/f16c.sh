#!/bin/bash
# Issue 16 A/B over HTTP: A (/tmp/rhA) vs C (/tmp/rhC), bench ingest of /tmp/rhB as the client, alternating.
run() { BIN=$1; L=$2; shift 2
  D=/tmp/prof/f16-$L; rm -rf $D; mkdir -p $D
  $BIN serve --data $D/data --listen 127.0.0.1:18090 > $D/server.log 2>&1 &
  PID=$!
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18090/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
  echo "== $L $(date -u +%T) args: $*"
  /tmp/rhB bench ingest --quiet --target http://127.0.0.1:18090 --tokens $D/data/tokens.toml --pid $PID --dir $D --badger-for 2s --fsync-for 1s "$@" 2>&1 | grep -E "durable|server"
  kill $PID; wait $PID 2>/dev/null
}
for i in 1 2 3; do run /tmp/rhA A-http-$i; run /tmp/rhC C-http-$i; done
