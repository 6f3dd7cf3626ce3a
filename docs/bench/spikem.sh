#!/bin/bash
# spikem.sh BIN LABEL: sim driver-spike against a separate serve; engine histograms over the spike window
BIN=$1; L=$2
D=/tmp/tr/spm-$L; rm -rf $D; mkdir -p $D
$BIN serve --data $D/data --listen 127.0.0.1:18097 > $D/server.log 2>&1 &
PID=$!
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18097/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
AT=$(grep -A1 'role = "admin"' $D/data/tokens.toml | grep token | cut -d'"' -f2)
/tmp/rhFinal sim --scenario driver-spike --target http://127.0.0.1:18097 --tokens $D/data/tokens.toml --duration 40s --quiet > $D/sim.txt 2>&1 &
SP=$!
sleep 4; curl -s 127.0.0.1:18097/metrics -H "Authorization: Bearer $AT" > $D/m0.txt
sleep 12; curl -s 127.0.0.1:18097/metrics -H "Authorization: Bearer $AT" > $D/m1.txt
sleep 14; curl -s 127.0.0.1:18097/metrics -H "Authorization: Bearer $AT" > $D/m2.txt
wait $SP; grep -E "dispatch|warehouse  |driver  " $D/sim.txt
echo "-- before the spike (4-16 s):"; python3 /tmp/prof/hq.py $D/m0.txt $D/m1.txt
echo "-- in the spike (16-30 s):"; python3 /tmp/prof/hq.py $D/m1.txt $D/m2.txt
python3 - $D/m1.txt $D/m2.txt <<'PY'
import sys,re
def load(p):
    d={}
    for l in open(p):
        m=re.match(r'(routehound_engine_sync_seconds_bucket)\{le="([^"]+)"\} (\S+)',l) or re.match(r'(routehound_[a-z_]*sync[a-z_]*_bucket)\{le="([^"]+)"\} (\S+)',l)
        if m: d[float(m.group(2))]=float(m.group(3))
    return d
a,b=load(sys.argv[1]),load(sys.argv[2])
ks=sorted(b); tot=b[ks[-1]]-a.get(ks[-1],0) if ks else 0
out=[]
for q in (0.5,0.9,0.99):
    for k in ks:
        if b[k]-a.get(k,0)>=q*tot: out.append("p%g<=%.2fms"%(q*100,k*1000)); break
print("fsync n=%d %s"%(tot," ".join(out)))
PY
kill $PID; wait $PID 2>/dev/null
