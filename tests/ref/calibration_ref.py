#!/usr/bin/python3
"""Reference values for tests/test_calibration.c, from numpy, scipy and PyTorch.

Run with Debian's python3 (numpy, scipy, python3-torch 1.13):
    /usr/bin/python3 tests/ref/calibration_ref.py > tests/ref/calibration_ref.txt
One line per array: "name count v0 v1 ..." (%.17g; logits %.9g as f32).

- temperature scaling: T minimising the mean NLL, from scipy.optimize.brentq
  on dNLL/dbeta (beta = 1/T);
- vector scaling: scipy.optimize.minimize (BFGS, analytic gradient, gtol 1e-10),
  bias shifted to mean 0; compared through the NLL and calibrated probabilities;
- ECE (equal-width and adaptive bins, norms 1 and 2), reliability bins and the
  multiclass Brier score with plain numpy, on confidences with and without ties;
- correctness-aware features (numpy) and loss + gradient (torch autograd)."""
import numpy as np
import scipy.optimize as so
import torch

rng = np.random.default_rng(2404)
N, K = 400, 5


def put(name, a, fmt="%.17g"):
    a = np.asarray(a, dtype=np.float64).ravel()
    print(name, a.size, " ".join(fmt % v for v in a))


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


true = rng.normal(size=(N, K)) * 1.5
labels = np.array([rng.choice(K, p=p) for p in softmax(true)])
logits = (3.0 * true + rng.normal(size=(N, K)) * 0.5).astype(np.float32)  # overconfident
z = logits.astype(np.float64)
put("logits", logits, "%.9g")
put("labels", labels, "%d")

# ---- temperature scaling ----
def dnll(beta):
    p = softmax(beta * z)
    return np.mean((p * z).sum(1) - z[np.arange(N), labels])


def nll(zz):
    p = softmax(zz)
    return -np.mean(np.log(p[np.arange(N), labels]))


beta = so.brentq(dnll, 1e-2, 1e2, xtol=1e-15, rtol=1e-15)
put("ts_T", [1.0 / beta])
put("ts_nll", [nll(beta * z)])
put("nll_raw", [nll(z)])

# ---- vector scaling ----
def vs_f(ab):
    a, b = ab[:K], ab[K:]
    u = a * z + b
    p = softmax(u)
    f = -np.mean(np.log(p[np.arange(N), labels]))
    r = p.copy()
    r[np.arange(N), labels] -= 1
    g = np.concatenate([(r * z).mean(0), r.mean(0)])
    return f, g


res = so.minimize(vs_f, np.concatenate([np.ones(K), np.zeros(K)]), jac=True, method="BFGS",
                  options={"gtol": 1e-10, "maxiter": 10000})
ab = res.x.copy()
ab[K:] -= ab[K:].mean()
put("vs_params", ab)
put("vs_nll", [res.fun])
put("vs_probs", softmax(ab[:K] * z + ab[K:]))

# ---- metrics ----
def conf_correct(p):
    return p.max(1), (p.argmax(1) == labels).astype(np.int64)


def bins_equal_width(c, B):
    b = np.zeros(c.size, dtype=np.int64)
    for k in range(B):
        b[(c > k / B) & (c <= (k + 1) / B)] = k
    return b, np.array([(k + 1) / B for k in range(B)])


def bins_adaptive(c, B):
    s = np.sort(c)
    n = c.size
    upper = np.array([s[-(-((k + 1) * n) // B) - 1] for k in range(B)])
    return np.searchsorted(upper, c, side="left"), upper


def reliability(c, ok, B, kind):
    b, upper = (bins_equal_width if kind == 0 else bins_adaptive)(c, B)
    cnt = np.bincount(b, minlength=B)
    sc = np.bincount(b, weights=c, minlength=B)
    sa = np.bincount(b, weights=ok, minlength=B)
    mc = np.where(cnt > 0, sc / np.maximum(cnt, 1), 0)
    ma = np.where(cnt > 0, sa / np.maximum(cnt, 1), 0)
    return cnt, mc, ma, upper


def ece(c, ok, B, kind, norm):
    cnt, mc, ma, _ = reliability(c, ok, B, kind)
    w = cnt / c.size
    gap = np.abs(ma - mc)
    return (w * gap).sum() if norm == 1 else np.sqrt((w * gap ** 2).sum())


p_raw = softmax(z)
c_raw, ok_raw = conf_correct(softmax(beta * z))  # temperature-scaled: gaps of both signs
c_tie = np.round(c_raw, 2)  # many ties
put("conf", c_raw)
put("correct", ok_raw, "%d")
put("conf_tied", c_tie)
for tag, c in (("", c_raw), ("tied_", c_tie)):
    for B in (10, 15):
        for kind in (0, 1):
            for norm in (1, 2):
                put("ece_%sB%d_k%d_n%d" % (tag, B, kind, norm), [ece(c, ok_raw, B, kind, norm)])
    cnt, mc, ma, up = reliability(c, ok_raw, 10, 1)
    put("rel_%scount" % tag, cnt)
    put("rel_%sconf" % tag, mc)
    put("rel_%sacc" % tag, ma)
    put("rel_%supper" % tag, up)
onehot = np.eye(K)[labels]
put("brier_raw", [((p_raw - onehot) ** 2).sum(1).mean()])
put("brier_ts", [((softmax(beta * z) - onehot) ** 2).sum(1).mean()])

# ---- correctness-aware calibrator ----
V, TOPK, H = 3, 4, 5
views = [(z + rng.normal(size=(N, K)) * s).astype(np.float32) for s in (0.5, 1.0, 2.0)]
for v, zv in enumerate(views):
    put("view%d" % v, zv, "%.9g")
order = np.argsort(-z, axis=1, kind="stable")[:, :TOPK]
feats = np.concatenate([np.take_along_axis(softmax(zv.astype(np.float64)), order, 1)
                        for zv in views], axis=1)
put("ca_features", feats)
F = V * TOPK
W1 = rng.normal(size=(H, F)) * 0.5
b1 = rng.normal(size=H) * 0.2
w2 = rng.normal(size=H) * 0.5
b2 = 1.2
theta = np.concatenate([W1.ravel(), b1, w2, [b2]])
put("ca_params", theta)


def ca_loss(th, balance):
    W1 = th[:H * F].view(H, F)
    b1 = th[H * F:H * F + H]
    w2 = th[H * F + H:H * F + 2 * H]
    b2 = th[-1]
    f = torch.tensor(feats)
    zz = torch.tensor(z)
    T = torch.clamp(torch.relu(f @ W1.T + b1) @ w2 + b2, 0.1, 10.0)
    conf = torch.softmax(zz / T[:, None], dim=1).max(dim=1).values
    c = torch.tensor((z.argmax(1) == labels).astype(np.float64))
    acc = c.mean()
    w = torch.where(c > 0, 1 - acc, acc) if balance else torch.ones_like(c)
    return (w * (conf - c) ** 2).sum() / w.sum(), T


for balance in (1, 0):
    th = torch.tensor(theta, requires_grad=True)
    L, T = ca_loss(th, balance)
    L.backward()
    put("ca_loss_b%d" % balance, [L.item()])
    put("ca_grad_b%d" % balance, th.grad.numpy())
    put("ca_T_b%d" % balance, T.detach().numpy())

# ---- AUGRC (Traub et al. 2024) over distinct thresholds (np.unique grouping) ----
def augrc(s, ok):
    n = s.size
    area, prev = 0.0, 0
    for t in np.unique(s)[::-1]:
        sel = s >= t
        cnt, wrong = sel.sum(), (sel & (ok == 0)).sum()
        area += (cnt - prev) / n * wrong / n
        prev = cnt
    return area


put("augrc", [augrc(c_raw, ok_raw)])
put("augrc_tied", [augrc(c_tie, ok_raw)])
