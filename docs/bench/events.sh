#!/bin/bash
# usage: events.sh BIN [PAIRS [SECONDS [LOAD FLAGS...]]] -- issue 21's "never slow the writers": dispatch
# p99 with and without the fleet-events consumer under the same driver load, and the point -> event latency.
# For each of PAIRS (3) pairs, alternating: a fresh `routehound serve` with the consumer on (the default),
# then one with [fleet] events = false, each under the same load in another process (drivers on routes of
# stops, so events are decided: docs/bench/fleetev.go.txt in its -url mode, default 512 drivers, 10,000
# points/s, a stop every 50 points, 40 stops) and a dispatch probe in a third process (PUTs of an
# assignment, sync: answered after their fsync; docs/bench/probe.go.txt) for SECONDS (20) once the routes
# are assigned. Prints each side's dispatch p99, the ratio on/off per pair, and the consumer's point ->
# event p99 (routehound_fleet_events_latency_p99_seconds: a deciding point durable -> its event durable,
# since the server's start) with its lag at the end.
# Needs the clients built (or FLEETEV= and PROBE= naming them):
#   mkdir -p /tmp/fleetev && cp docs/bench/fleetev.go.txt /tmp/fleetev/main.go && (cd /tmp/fleetev && go mod init fleetev; go build)
#   mkdir -p /tmp/probe && cp docs/bench/probe.go.txt /tmp/probe/main.go && (cd /tmp/probe && go mod init probe; go build)
BIN=$1; PAIRS=${2:-3}; SECS=${3:-20}; shift $(( $# < 3 ? $# : 3 ))
LOADFLAGS=${*:--drivers 512 -rate 10000 -every 50 -stops 40}
FLEETEV=${FLEETEV:-/tmp/fleetev/fleetev}; PROBE=${PROBE:-/tmp/probe/probe}
PORT=18124; D=/tmp/ev21
[ -x "$BIN" ] && [ -x "$FLEETEV" ] && [ -x "$PROBE" ] || { echo "need BIN, $FLEETEV and $PROBE (see the header)" >&2; exit 2; }
rm -rf $D; mkdir -p $D
printf '[fleet]\nevents = false\n' > $D/off.toml
printf '[fleet]\nevents = true\n' > $D/on.toml
tok() { grep -A1 "role = \"$2\"" $1/tokens.toml | grep token | cut -d'"' -f2; }
p99() { sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p' $1; }
side() { # pair mode -> $D/$1-$2.{probe,load,metrics}
  local dir=$D/$1-$2 i; mkdir -p $dir
  $BIN serve --config $D/$2.toml --data $dir/data --listen 127.0.0.1:$PORT > $dir/server.log 2>&1 &
  local pid=$!
  for i in $(seq 100); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$PORT/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
  $FLEETEV -url http://127.0.0.1:$PORT -t $dir/data/tokens.toml -d $((SECS + 2))s $LOADFLAGS > $dir/load.txt 2>&1 &
  local lp=$!
  for i in $(seq 600); do grep -q driving $dir/load.txt && break; kill -0 $lp 2>/dev/null || break; sleep 0.1; done
  sleep 1 # the load at its rate
  $PROBE -url http://127.0.0.1:$PORT -token $(tok $dir/data dispatch) -rate 50 -d ${SECS}s > $D/$1-$2.probe
  wait $lp
  curl -s 127.0.0.1:$PORT/metrics -H "Authorization: Bearer $(tok $dir/data admin)" > $D/$1-$2.metrics
  kill $pid; wait $pid 2>/dev/null
  echo "pair $1 consumer $2: $(cat $D/$1-$2.probe) | $(tail -1 $dir/load.txt)"
}
echo "=== $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) events.sh $BIN $PAIRS $SECS $LOADFLAGS"
for i in $(seq $PAIRS); do
  side $i on
  side $i off
  on=$(p99 $D/$i-on.probe); off=$(p99 $D/$i-off.probe)
  ev=$(sed -n 's/^routehound_fleet_events_latency_p99_seconds //p' $D/$i-on.metrics)
  lag=$(sed -n 's/^routehound_fleet_events_lag_records //p' $D/$i-on.metrics)
  n=$(sed -n 's/^routehound_fleet_events_written_total //p' $D/$i-on.metrics)
  offev=$(grep -c '^routehound_fleet_events_' $D/$i-off.metrics)
  echo "pair $i: dispatch p99 on ${on} ms, off ${off} ms, ratio on/off $(awk -v a="$on" -v b="$off" 'BEGIN{if (b > 0) printf "%.2f", a/b; else print "n/a"}'); point->event p99 ${ev:-?} s (${n:-0} events, lag ${lag:-?} at the end; off: ${offev} consumer metrics)"
done
