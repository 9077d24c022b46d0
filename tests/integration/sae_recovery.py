#!/usr/bin/env python3
# Mean over planted features of the best |cos| with a learned decoder row (stdlib only): DICT_FILE[:KEY] SAE_DIR [MIN].
# KEY: the planted dictionary's tensor (default `dictionary`; `target_dictionary` for a transcoder).
import json,sys,struct,array,math
def load(p):
    b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); out={}
    for k,v in h.items():
        if k=='__metadata__': continue
        s,e=v['data_offsets']; a=array.array('f'); a.frombytes(b[8+n+s:8+n+e]); out[k]=(a,v['shape'])
    return out
def rows(t):
    a,(r,c)=t; return [a[i*c:(i+1)*c] for i in range(r)]
path,_,key=sys.argv[1].partition(':')
D=rows(load(path)[key or 'dictionary']); W=rows(load(sys.argv[2]+'/sae_weights.safetensors')['W_dec'])
Wn=[[x/math.sqrt(sum(y*y for y in w)) for x in w] for w in W]
best=[max(abs(sum(a*b for a,b in zip(d,w))) for w in Wn) for d in D]
m=json.load(open(sys.argv[2]+'/metrics.json'))
print(sys.argv[2],'recovery %.4f'%(sum(best)/len(best)),'ev %.4f'%m['held_out']['explained_variance'],'l0 %.2f'%m['held_out']['l0'],'dead %.3f'%m['held_out']['frac_dead'])
if len(sys.argv) > 3 and sum(best) / len(best) < float(sys.argv[3]):
    sys.exit('FAIL: recovery %.4f < %s' % (sum(best) / len(best), sys.argv[3]))
