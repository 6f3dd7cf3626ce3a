#!/bin/bash
# ret.sh BIN LABEL RETENTION_MB: 20 s at 40k pts/s, dispatch probe in the last 8 s; trimmed records and committer busy
BIN=$1; L=$2; MB=$3
D=/tmp/tr/r-$L; rm -rf $D; mkdir -p $D
printf '[storage]\nretention_mb = %s\n' $MB > $D/cfg.toml
$BIN serve --config $D/cfg.toml --data $D/data --listen 127.0.0.1:18093 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18093/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
DT=$(grep -A1 'role = "driver"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
PT=$(grep -A1 'role = "dispatch"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/load/load -url http://127.0.0.1:18093 -token $DT -d 24s -rate 40000 > $D/load.txt &
sleep 14; curl -s 127.0.0.1:18093/metrics -H "Authorization: Bearer $AT" > $D/m0.txt
echo -n "$L: "; /tmp/probe/probe -url http://127.0.0.1:18093 -token $PT -d 8s
curl -s 127.0.0.1:18093/metrics -H "Authorization: Bearer $AT" > $D/m1.txt
python3 /tmp/prof/hq.py $D/m0.txt $D/m1.txt
grep -hE "^routehound_(log_trimmed|engine_trimmed)[a-z_]* |^routehound_committer_busy_seconds_total|^process_cpu_seconds_total" $D/m0.txt $D/m1.txt
wait %2; cat $D/load.txt; kill $PID; wait $PID 2>/dev/null
