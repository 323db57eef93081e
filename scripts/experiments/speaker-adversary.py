"""A PyTorch replica of the encoder head's recipe (layer-normalised Whisper states, softmax layer
weights, 256 hidden, dropout 0.3, Adam 1e-3 with cosine decay, label smoothing 0.1, batch 32, 100
epochs, speed copies 0.9/1.1, best epoch by validation weighted F1) on the folds of a speaker
cross-validation, with an optional speaker adversary: a linear speaker classifier on the hidden layer
behind a gradient reversal of weight LAMBDA (0: off). An experiment outside the library, to decide
whether the option is worth building natively (docs/RESULTS.md).

    node scripts/experiments/dump-embeddings.mjs runs/cv-enc-auto /tmp/states
    python scripts/experiments/speaker-adversary.py LAMBDA SEED /tmp/states runs/cv-enc-auto
"""
import json, sys, math, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(2)
DATA, CV = sys.argv[3], sys.argv[4]
meta = json.load(open(f'{DATA}/meta.json'))
emb = {s['speed']: np.fromfile(f"{DATA}/emb-{s['speed']}.f32", dtype=np.float32).reshape(s['shape']) for s in meta['speeds']}
paths = [i['path'] for i in meta['items']]
index = {p: k for k, p in enumerate(paths)}
LABELS = ['neutral','calm','happy','sad','angry','fearful','disgust','surprised']
lab = np.array([LABELS.index(i['label']) for i in meta['items']])
spk = [i['speaker'] for i in meta['items']]

class Head(nn.Module):
    def __init__(self, speakers, lam):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(7)); self.h = nn.Linear(512, 256); self.out = nn.Linear(256, 8)
        self.adv = nn.Linear(256, speakers) if lam > 0 else None; self.lam = lam
    def forward(self, x):
        x = F.layer_norm(x, (512,)); x = (x * self.w.softmax(0).view(1, 7, 1)).sum(1)
        h = F.relu(self.h(F.dropout(x, 0.3, self.training)))
        logits = self.out(F.dropout(h, 0.3, self.training))
        if self.adv is None or not self.training: return logits, None
        g = h.detach() * (1 + self.lam) - h * self.lam
        return logits, self.adv(g)

def wf1(y, p):
    f = 0
    for c in range(8):
        tp = ((p == c) & (y == c)).sum(); fp = ((p == c) & (y != c)).sum(); fn = ((p != c) & (y == c)).sum()
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0
        f += f1 * (y == c).sum()
    return f / len(y)

def fold(k, lam, seed=42):
    sp = json.load(open(f'{CV}/fold-{k}/split.json'))
    ids = {part: np.array([index[i['path']] for i in sp[part]]) for part in ['train', 'val', 'test']}
    tr = ids['train']
    speakers = sorted({spk[i] for i in tr}); sidx = np.array([speakers.index(spk[i]) for i in tr])
    X = torch.tensor(np.concatenate([emb[1][tr], emb[0.9][tr], emb[1.1][tr]]))
    Y = torch.tensor(np.concatenate([lab[tr]] * 3)); S = torch.tensor(np.concatenate([sidx] * 3))
    torch.manual_seed(seed); m = Head(len(speakers), lam)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    epochs, bs = 100, 32; steps = epochs * math.ceil(len(X) / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1))))
    g = torch.Generator().manual_seed(seed)
    best = (-1, None)
    Xv = torch.tensor(emb[1][ids['val']]); yv = lab[ids['val']]; Xt = torch.tensor(emb[1][ids['test']]); yt = lab[ids['test']]
    for e in range(epochs):
        m.train(); perm = torch.randperm(len(X), generator=g)
        for b in range(0, len(X), bs):
            i = perm[b:b + bs]; logits, sl = m(X[i])
            loss = F.cross_entropy(logits, Y[i], label_smoothing=0.1)
            if sl is not None: loss = loss + F.cross_entropy(sl, S[i])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        m.eval()
        with torch.no_grad():
            pv = m(Xv)[0].argmax(1).numpy(); f = wf1(yv, pv)
            if f > best[0]:
                pt = m(Xt)[0].argmax(1).numpy(); best = (f, ((pv == yv).mean(), (pt == yt).mean()))
    return best[1]

lam, seed = float(sys.argv[1]), int(sys.argv[2])
res = [fold(k, lam, seed) for k in range(5)]
v = [r[0] for r in res]; t = [r[1] for r in res]
print(json.dumps({"seed": seed, "lambda": lam, 'val': round(100 * np.mean(v), 2), 'test': round(100 * np.mean(t), 2), 'testStd': round(100 * np.std(t, ddof=1), 2), 'perFold': [round(100 * x, 1) for x in t]}))
