#!/bin/bash
# fleetev.sh BIN [client flags]: issue 21's measurement. Two servers from BIN on loopback, A with the
# fleet-events consumer (the default) and B without ([fleet] events = false), each on its own data dir
# under /tmp/fe; the load client (docs/bench/fleetev.go.txt, built as /tmp/fleetev/fleetev) runs in
# another process and alternates its phases between them. Prints the client's report.
BIN=$1; shift
D=/tmp/fe; rm -rf $D; mkdir -p $D/a $D/b
printf '[fleet]\nevents = false\n' > $D/b.toml
$BIN serve --data $D/a/data --listen 127.0.0.1:18121 > $D/a/server.log 2>&1 &
PA=$!
$BIN serve --config $D/b.toml --data $D/b/data --listen 127.0.0.1:18122 > $D/b/server.log 2>&1 &
PB=$!
for p in 18121 18122; do
  for i in $(seq 100); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$p/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
done
/tmp/fleetev/fleetev -a http://127.0.0.1:18121 -ta $D/a/data/tokens.toml -b http://127.0.0.1:18122 -tb $D/b/data/tokens.toml "$@"
kill $PA $PB; wait $PA $PB 2>/dev/null
