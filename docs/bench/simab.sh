#!/bin/bash
# sim scenario against a separate serve: BIN LABEL SCENARIO
run() {
  BIN=$1; L=$2; SC=$3
  D=/tmp/prof/sim-$L; rm -rf $D; mkdir -p $D
  $BIN serve --data $D/data --listen 127.0.0.1:18095 > $D/server.log 2>&1 &
  PID=$!
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18095/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
  echo "== $L $SC $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  /tmp/rhFinal sim --scenario $SC --target http://127.0.0.1:18095 --tokens $D/data/tokens.toml --duration 40s --quiet --json $D/report.json 2>&1 | tail -25
  kill $PID; wait $PID 2>/dev/null
}
run /tmp/rhS0 before-spike driver-spike
run /tmp/rhFinal after-spike driver-spike
run /tmp/rhS0 before-wh warehouse-burst
run /tmp/rhFinal after-wh warehouse-burst
