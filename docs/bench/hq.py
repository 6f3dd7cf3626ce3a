import sys,re
lane=sys.argv[3] if len(sys.argv)>3 else "dispatch"
def load(p):
    d={}
    for l in open(p):
        m=re.match(r'routehound_lane_(latency|queue_wait)_seconds_bucket\{lane="%s",le="([^"]+)"\} (\S+)'%lane,l)
        if m: d[(m.group(1),float(m.group(2)))]=float(m.group(3))
    return d
a,b=load(sys.argv[1]),load(sys.argv[2])
for kind in ('latency','queue_wait'):
    ks=sorted(k for k in b if k[0]==kind)
    tot=b[ks[-1]]-a.get(ks[-1],0)
    out=[]
    for q in (0.5,0.9,0.99):
        for k in ks:
            if b[k]-a.get(k,0)>=q*tot: out.append("p%g<=%.1fms"%(q*100,k[1]*1000)); break
    print("engine %s %s n=%d %s"%(lane,kind,tot," ".join(out)))
