#!/usr/bin/python3
"""Reference values for tests/test_train_weighted.c (weighted softmax cross-entropy,
class weights, scalarization weights), computed with PyTorch, scikit-learn and numpy.

Run with Debian's python3 (python3-torch 1.13, python3-sklearn 1.2):
    /usr/bin/python3 tests/ref/weighted_loss_ref.py > tests/ref/weighted_loss_ref.txt
Output: one line per array, "name count v0 v1 ...", values printed with %.9g
(f32 inputs) or %.17g (f64 results)."""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

torch.manual_seed(19)
B, C = 7, 5


def put(name, a, fmt="%.17g"):
    a = np.asarray(a, dtype=np.float64).ravel()
    print(name, a.size, " ".join(fmt % v for v in a))


logits = (torch.rand(B, C) * 8 - 4).float()
labels = torch.tensor([0, 3, 3, 1, 4, 0, 2])
sw = torch.tensor([0.5, 2.0, 1.0, 0.0, 3.25, 1.5, 0.75], dtype=torch.float64)
cw = torch.tensor([1.0, 0.25, 4.0, 2.0, 0.5], dtype=torch.float64)
put("logits", logits.numpy(), "%.9g")
put("labels", labels.numpy(), "%d")
put("sample_weight", sw.numpy())
put("class_weight", cw.numpy())

# PyTorch's own weight= convention (class weights only, reduction "mean").
z = logits.double().clone().requires_grad_()
L = F.cross_entropy(z, labels, weight=cw)
L.backward()
put("torch_cw_loss", [L.item()])
put("torch_cw_grad", z.grad.numpy())

# Sample x class weights, both reductions, from per-row losses.
for name, use_sw, use_cw in (("both", 1, 1), ("sw", 1, 0), ("cw", 0, 1), ("none", 0, 0)):
    for red in ("wmean", "mean"):
        z = logits.double().clone().requires_grad_()
        rows = F.cross_entropy(z, labels, reduction="none")
        w = torch.ones(B, dtype=torch.float64)
        if use_sw:
            w = w * sw
        if use_cw:
            w = w * cw[labels]
        L = (w * rows).sum() / (w.sum() if red == "wmean" else B)
        L.backward()
        put("%s_%s_loss" % (name, red), [L.item()])
        put("%s_%s_grad" % (name, red), z.grad.numpy())

# scikit-learn class_weight="balanced".
y_bal = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 3, 4])
put("balanced_labels", y_bal, "%d")
put("balanced_weights", compute_class_weight("balanced", classes=np.arange(5), y=y_bal))

# Scalarization weights w_k = q_k N / n_k, q_k = n_k^(1/T) / sum n^(1/T).
sizes = np.array([6000.0, 3000.0, 1200.0, 300.0, 60.0, 0.0])
put("scal_sizes", sizes)
for t in (1.0, 2.0, 3.0, 10.0):
    p = sizes / sizes.sum()
    q = np.where(sizes > 0, p ** (1.0 / t), 0.0)
    q /= q.sum()
    w = np.where(sizes > 0, q * sizes.sum() / np.where(sizes > 0, sizes, 1), 0.0)
    put("scal_T%g" % t, w)
