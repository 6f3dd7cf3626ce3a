import sys,re
def load(p,name):
    d={}
    for l in open(p):
        m=re.match(r'routehound_%s_bucket\{le="([^"]+)"\} (\S+)'%name,l)
        if m: d[float(m.group(1))]=float(m.group(2))
    return d
for name in sys.argv[3:]:
    a,b=load(sys.argv[1],name),load(sys.argv[2],name)
    if not b: continue
    ks=sorted(b); tot=b[ks[-1]]-a.get(ks[-1],0); out=[]
    for q in (0.5,0.9,0.99):
        for k in ks:
            if b[k]-a.get(k,0)>=q*tot: out.append("p%g<=%.2fms"%(q*100,k*1000)); break
    print("%s n=%d %s"%(name,tot," ".join(out)))
