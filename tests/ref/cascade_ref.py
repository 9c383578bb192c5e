#!/usr/bin/python3
"""Reference numbers for tests/test_cascade.c (early-exit cascades and their metrics).

Run with Debian's python (numpy, scipy, sklearn):
    /usr/bin/python3 tests/ref/cascade_ref.py > tests/ref/cascade_ref.txt

Everything is computed in numpy float64 from float32 logits, following the
conventions of include/effml/cascade.h, with the window/threshold maths of
Guoxoug/window-early-exit (`cascade_results.py`, `utils/eval_utils.py`):
scores are confidences (higher = more confident), selection is score >= t,
quantiles are numpy's default 'linear', the percentile rank is scipy's
percentileofscore(kind='rank').  AUROC is cross-checked with sklearn.

Output: one line per array, "name count v0 v1 ...", values printed with %.17g
(float32 inputs with %.9g, exact round trip).
"""
import numpy as np
from scipy.stats import percentileofscore
from sklearn.metrics import roc_auc_score

rng = np.random.RandomState(7)
K = 5
M = 3
N_VAL = 240
N_TEST = 300
N_OOD = 100
COSTS = [1.0e6, 2.5e6, 4.0e6]


def make_logits(labels, strength):
    n = labels.shape[0]
    z = rng.normal(0.0, 1.0, size=(n, K))
    z[np.arange(n), labels] += strength * rng.uniform(0.0, 2.5, size=n)
    return (z * 1.7).astype(np.float32)


y_val = rng.randint(0, K, size=N_VAL)
y_test = rng.randint(0, K, size=N_TEST)
# members get stronger with the stage (as small -> larger models)
val = [make_logits(y_val, s) for s in (1.0, 1.3, 1.6)]
test = [make_logits(y_test, s) for s in (1.0, 1.3, 1.6)]
ood = (rng.normal(0.0, 1.0, size=(N_OOD, K)) * 1.7).astype(np.float32)

out = []


def emit(name, arr, fmt="%.17g"):
    arr = np.asarray(arr).ravel()
    out.append(name + " " + str(arr.size) + " " + " ".join(fmt % v for v in arr))


def softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(z, T=1.0):
    z = z.astype(np.float64)
    zmax = z.max(axis=1)
    return zmax + T * np.log(np.exp((z - zmax[:, None]) / T).sum(axis=1))


def prob_score(p, kind):
    if kind == "msp":
        return p.max(axis=1)
    if kind == "entropy":
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    if kind == "margin":
        s = np.sort(p, axis=1)
        return s[:, -1] - s[:, -2]
    if kind == "doctor":
        return (p * p).sum(axis=1)
    raise ValueError(kind)


def stages(logits, kind, T=1.0, agg="mean"):
    """scores, preds, probs of every stage on every sample."""
    scores, preds, probs = [], [], []
    acc = np.zeros_like(logits[0], dtype=np.float64)
    sacc = np.zeros(logits[0].shape[0])
    for m, z in enumerate(logits):
        p = softmax(z)
        if agg == "mean":
            acc = acc + p
            pbar = acc / (m + 1)
        else:
            pbar = p
        if kind in ("max_logit", "energy"):
            s = z.astype(np.float64).max(axis=1) if kind == "max_logit" else logsumexp(z, T)
            sacc = sacc + s if agg == "mean" else s
            score = sacc / (m + 1) if agg == "mean" else sacc
        else:
            score = prob_score(pbar, kind)
        scores.append(score)
        preds.append(pbar.argmax(axis=1))
        probs.append(pbar)
    return scores, preds, probs


KINDS = ["msp", "entropy", "max_logit", "energy", "margin", "doctor"]

for i, z in enumerate(val):
    emit("val_logits%d" % i, z, "%.9g")
for i, z in enumerate(test):
    emit("test_logits%d" % i, z, "%.9g")
emit("ood_logits", ood, "%.9g")
emit("val_labels", y_val, "%d")
emit("test_labels", y_test, "%d")

# ---- scores of every kind, every stage (mean aggregation), and LAST aggregation ----
for kind in KINDS:
    s, p, _ = stages(test, kind)
    emit("score_%s" % kind, np.stack(s))
    emit("pred_%s" % kind, np.stack(p), "%d")
s, _, _ = stages(test, "energy", T=2.5)
emit("score_energy_t2.5", np.stack(s))
s, p, _ = stages(test, "entropy", agg="last")
emit("score_entropy_last", np.stack(s))


# ---- calibration ----
def ceil_count(c, n):
    x = c * n
    k = int(np.ceil(x - 1e-9 * max(x, 1.0)))
    return min(max(k, 1), n)


def desc(s):
    return np.argsort(-s, kind="stable")


def fit_tau(s, correct, target, value):
    o = desc(s)
    if target == "risk":
        risk = np.cumsum(~correct[o]) / np.arange(1, len(s) + 1)
        ok = np.nonzero(risk <= value)[0]
        return s[o][ok[-1]]
    return s[o][ceil_count(value, len(s)) - 1]


def calibrate(logits, labels, kind, rule, target, value, below=0.1, above=0.1, agg="mean"):
    scores, preds, _ = stages(logits, kind, agg=agg)
    rules = []
    for m in range(len(logits) - 1):
        s = scores[m]
        tau = fit_tau(s, preds[m] == labels, target, value)
        if rule == "threshold":
            rules.append((tau, np.inf, tau))
        else:
            q = percentileofscore(s, tau, kind="rank") / 100.0
            lo = np.quantile(s, min(max(q - below, 0.0), 1.0))
            hi = np.quantile(s, min(max(q + above, 0.0), 1.0))
            rules.append((lo, hi, tau))
    return rules


def run(logits, kind, rule, rules, agg="mean"):
    scores, preds, probs = stages(logits, kind, agg=agg)
    n = logits[0].shape[0]
    exit_stage = np.full(n, len(logits) - 1)
    done = np.zeros(n, bool)
    for m, (a, b, _) in enumerate(rules):
        s = scores[m]
        ex = (s >= a) if rule == "threshold" else ((s < a) | (s > b))
        ex &= ~done
        exit_stage[ex] = m
        done |= ex
    sc = np.choose(exit_stage, scores)
    pr = np.choose(exit_stage, preds)
    pb = np.stack(probs)[exit_stage, np.arange(n)]
    reach = [(exit_stage >= m).sum() for m in range(len(logits))]
    cost = sum(r / n * c for r, c in zip(reach, COSTS))
    return sc, pr, exit_stage, pb, reach, cost


CASES = [
    ("win_cov", "msp", "window", "coverage", 0.8),
    ("win_risk", "msp", "window", "risk", 0.1),
    ("thr_cov", "msp", "threshold", "coverage", 0.7),
    ("win_tpr_energy", "energy", "window", "tpr", 0.95),
    ("win_risk_entropy_last", "entropy", "window", "risk", 0.15),
]
for name, kind, rule, target, value in CASES:
    agg = "last" if name.endswith("_last") else "mean"
    rules = calibrate(val, y_val, kind, rule, target, value, agg=agg)
    emit(name + "_rules", np.array(rules))  # per stage: a, b, tau
    sc, pr, st, pb, reach, cost = run(test, kind, rule, rules, agg=agg)
    emit(name + "_score", sc)
    emit(name + "_pred", pr, "%d")
    emit(name + "_stage", st, "%d")
    emit(name + "_reach", reach, "%d")
    emit(name + "_cost", [cost])
    if name == "win_cov":
        emit(name + "_probs", pb)

# ---- metrics on the window cascade's final outputs ----
# Tie convention of cascade.h ("Ties"): one curve point per distinct score,
# point 0 = (coverage 0, risk of point 1, threshold +inf), AURC = step sum.
# Written with np.unique (grouping), independently of the C code's sort.
def rc_grouped(s, correct):
    t, inv = np.unique(s, return_inverse=True)        # ascending distinct scores
    t = t[::-1]                                        # descending
    g = len(t) - 1 - inv                               # group of each sample
    n_g = np.bincount(g, minlength=len(t))
    w_g = np.bincount(g, weights=(~correct).astype(float), minlength=len(t))
    cnt = np.cumsum(n_g)
    wrong = np.cumsum(w_g)
    risk = wrong / cnt
    cov = np.concatenate([[0.0], cnt / len(s)])
    risk = np.concatenate([[risk[0]], risk])
    thr = np.concatenate([[np.inf], t])
    return cov, risk, thr, cnt


def aurc(s, correct):
    cov, risk, _, _ = rc_grouped(s, correct)
    return np.sum(np.diff(cov) * risk[1:])


def risk_at_coverage(s, correct, c):
    cov, risk, thr, cnt = rc_grouped(s, correct)
    j = np.nonzero(cnt >= ceil_count(c, len(s)))[0][0] + 1
    return risk[j], thr[j], cov[j]


def coverage_at_risk(s, correct, r):
    cov, risk, thr, _ = rc_grouped(s, correct)
    ok = np.nonzero(risk[1:] <= r)[0]
    j = ok[-1] + 1 if len(ok) else 0
    return cov[j], thr[j]


def emit_metrics(prefix, s, correct):
    cov, risk, thr, _ = rc_grouped(s, correct)
    emit(prefix + "_coverage", cov)
    emit(prefix + "_risk", risk)
    emit(prefix + "_thr", thr)
    emit(prefix + "_aurc", [aurc(s, correct)])
    for c in (0.25, 0.5, 0.8, 1.0):
        emit(prefix + "_risk_at_%g" % c, risk_at_coverage(s, correct, c))
    for r in (0.02, 0.05, 0.1, 0.3):
        emit(prefix + "_cov_at_%g" % r, coverage_at_risk(s, correct, r))


rules = calibrate(val, y_val, "msp", "window", "coverage", 0.8)
sc, pr, st, pb, reach, cost = run(test, "msp", "window", rules)
correct = pr == y_test
n = len(sc)
emit_metrics("m", sc, correct)
emit("m_top1_error", [np.mean(~correct)])
emit("m_nll", [np.mean(-np.log(pb[np.arange(n), y_test]))])
# the reference's own AURC (np.trapz from (0, 0), one point per sample): without
# ties ours minus the overall error / (2N)
o = desc(sc)
risk_ref = np.concatenate([[0.0], np.cumsum(~correct[o]) / np.arange(1, n + 1)])
emit("m_aurc_reference_trapz", [np.trapz(risk_ref, np.linspace(0, 1, n + 1))])

# heavy ties: the same scores rounded to 2 decimals (about 60 distinct values)
st2 = np.round(sc, 2)
emit("t_scores", st2)
emit("t_correct", correct.astype(int), "%d")
emit_metrics("t", st2, correct)
# OOD: stage-0 MSP of the test set (ID) vs the OOD logits
s_id = softmax(test[0]).max(axis=1)
s_ood = softmax(ood).max(axis=1)
s_all = np.concatenate([s_id, s_ood])
is_ood = np.concatenate([np.zeros(N_TEST, int), np.ones(N_OOD, int)])
auroc = roc_auc_score(is_ood, -s_all)
emit("o_auroc", [auroc])
t = np.sort(s_id)[::-1][ceil_count(0.95, N_TEST) - 1]
emit("o_fpr95", [np.mean(s_ood >= t), t])

print("\n".join(out))
