#!/bin/bash
# usage: uplink.sh BIN MODE ROUND -- MODE off|on: a driver flood (16 conns, 100-point
# batches, as fast as answered, 14 s) against a separate serve, with (on) or without (off)
# the uplink to a local JetStream (natsd.go.txt); a dispatcher (probe.go.txt, 20/s) measures
# its latency in seconds 3-11; /v1/uplink is sampled every second; after the flood, how long
# the uplink takes to catch up. Tools in $T (default /tmp/upl-bench: load, probe, natsd).
# RATE=N paces the flood at N points/s in all (default: as fast as answered).
BIN=$1; MODE=$2; R=$3; T=${T:-/tmp/upl-bench}; D=$T/run-$MODE-$R; P=18491
rm -rf $D; mkdir -p $D
if [ $MODE = on ]; then
  $T/natsd -port 14299 -dir $D/js > $D/natsd.log 2>&1 & NP=$!
  printf '[uplink]\nnats_url = "nats://127.0.0.1:14299"\ndepot = "bench"\n' > $D/rh.toml
else
  printf '' > $D/rh.toml
fi
$BIN serve --config $D/rh.toml --data $D/data --listen 127.0.0.1:$P > $D/server.log 2>&1 & SP=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$P/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
tok() { grep -A1 "role = \"$1\"" $D/data/tokens.toml | grep token | cut -d'"' -f2; }
DT=$(tok driver); PT=$(tok dispatch); AT=$(tok admin)
up() { curl -s -H "Authorization: Bearer $AT" 127.0.0.1:$P/v1/uplink; }
$T/load -url http://127.0.0.1:$P -token $DT -d 14s -rate ${RATE:-0} > $D/load.txt & LP=$!
( for i in $(seq 14); do sleep 1; echo "$(date +%s.%N) $(up)"; done ) > $D/samples.txt & SMP=$!
sleep 3; echo -n "$MODE $R flood: "; $T/probe -url http://127.0.0.1:$P -token $PT -d 8s
wait $LP; cat $D/load.txt; wait $SMP
if [ $MODE = on ]; then
  t0=$(date +%s.%N)
  for i in $(seq 600); do s=$(up); l=$(echo "$s" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag_records"])'); [ "$l" = 0 ] && break; sleep 0.1; done
  t1=$(date +%s.%N)
  python3 - "$D/samples.txt" "$t0" "$t1" "$s" <<'PY'
import json, sys
rows = [l.split(' ', 1) for l in open(sys.argv[1]) if l.strip()]
rows = [(float(t), json.loads(j)) for t, j in rows]
ship = [(t, s['shipped_records']) for t, s in rows]
rate = (ship[-1][1] - ship[0][1]) / (ship[-1][0] - ship[0][0])
dur = [(t, s['durable_lsn']) for t, s in rows]
drate = (dur[-1][1] - dur[0][1]) / (dur[-1][0] - dur[0][0])
lr = sorted(s['lag_records'] for _, s in rows); ls = sorted(s['lag_seconds'] for _, s in rows)
end = json.loads(sys.argv[4])
print(f"uplink: shipped {rate:,.0f} records/s while {drate:,.0f} records/s became durable; lag records median {lr[len(lr)//2]:,} max {lr[-1]:,}; lag seconds median {ls[len(ls)//2]:.3f} max {ls[-1]:.3f}; caught up {float(sys.argv[3])-float(sys.argv[2]):.2f} s after the flood; acked {end['acked_lsn']} durable {end['durable_lsn']} failures {end['failures']} dropped {end['dropped_records']}")
PY
fi
kill $SP; wait $SP 2>/dev/null
[ $MODE = on ] && { kill $NP; wait $NP 2>/dev/null; }
rm -rf $D/data $D/js
