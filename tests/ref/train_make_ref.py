#!/usr/bin/python3
"""Reference values for tests/test_train_ref.c, computed with PyTorch.

Run with Debian's python3 (python3-torch 1.13):
    /usr/bin/python3 tests/ref/train_make_ref.py
Writes tests/ref/train_ref.safetensors (f32 tensors, i64 labels).  The
safetensors file is written by hand (no safetensors package needed): u64 LE
header length, JSON header, contiguous little-endian data.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(1234)
out = {}


def put(name, t):
    out[name] = t.detach().cpu().contiguous()


def r(*shape, lo=-2.0, hi=2.0):
    return (torch.rand(*shape, dtype=torch.float32) * (hi - lo) + lo)


# ---- dense: y = x W^T + b ----
x = r(4, 5).requires_grad_()
W = r(3, 5).requires_grad_()
b = r(3).requires_grad_()
dy = r(4, 3)
y = F.linear(x, W, b)
y.backward(dy)
for k, v in dict(x=x, W=W, b=b, dy=dy, y=y, dx=x.grad, dW=W.grad, db=b.grad).items():
    put("dense." + k, v)

# ---- activations (x away from 0 so relu's kink is not probed) ----
xa = r(3, 7, lo=-3.0, hi=3.0)
xa[xa.abs() < 0.05] = 0.5
dya = r(3, 7)
put("act.x", xa)
put("act.dy", dya)
acts = {
    "relu": torch.relu,
    "gelu": lambda t: F.gelu(t),
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
}
for name, fn in acts.items():
    xv = xa.clone().requires_grad_()
    yv = fn(xv)
    yv.backward(dya)
    put("act.%s.y" % name, yv)
    put("act.%s.dx" % name, xv.grad)

# ---- layer norm ----
ln = torch.nn.LayerNorm(6, eps=1e-5)
with torch.no_grad():
    ln.weight.copy_(r(6, lo=0.5, hi=1.5))
    ln.bias.copy_(r(6))
xl = (r(4, 6) * 3 + 1).requires_grad_()
dyl = r(4, 6)
yl = ln(xl)
yl.backward(dyl)
for k, v in dict(x=xl, weight=ln.weight, bias=ln.bias, dy=dyl, y=yl, dx=xl.grad,
                 dweight=ln.weight.grad, dbias=ln.bias.grad).items():
    put("ln." + k, v)

# ---- softmax cross-entropy ----
z = (r(5, 4) * 4).requires_grad_()
lab = torch.tensor([0, 3, 1, 1, 2], dtype=torch.int64)
loss = F.cross_entropy(z, lab)
loss.backward()
put("ce.logits", z)
put("ce.labels", lab)
put("ce.loss", loss.reshape(1))
put("ce.dlogits", z.grad)

# ---- optimizers: two steps with fixed gradients ----
p0 = r(3, 4)
g1 = r(3, 4)
g2 = r(3, 4)
put("opt.p0", p0)
put("opt.g1", g1)
put("opt.g2", g2)


def run(make):
    p = torch.nn.Parameter(p0.clone())
    o = make([p])
    res = []
    for g in (g1, g2):
        p.grad = g.clone()
        o.step()
        res.append(p.detach().clone())
    return res


a1, a2 = run(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1))
put("adamw.p1", a1)
put("adamw.p2", a2)
n1, n2 = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3))
put("sgd_nesterov.p1", n1)
put("sgd_nesterov.p2", n2)
m1, m2 = run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.25))
put("sgd_momentum.p1", m1)
put("sgd_momentum.p2", m2)

# ---- a small MLP (sequential naming 0., 2.): loss and parameter gradients ----
mlp = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
xm = r(6, 5)
ym = torch.tensor([0, 1, 2, 2, 1, 0], dtype=torch.int64)
lm = F.cross_entropy(mlp(xm), ym)
lm.backward()
put("mlp.x", xm)
put("mlp.labels", ym)
put("mlp.loss", lm.reshape(1))
put("mlp.logits", mlp(xm))
for k, v in mlp.state_dict().items():
    put("mlp." + k, v)
for k, v in mlp.named_parameters():
    put("mlp_grad." + k, v.grad)

# ---- write safetensors by hand ----
DT = {torch.float32: "F32", torch.int64: "I64"}
header, blobs, off = {}, [], 0
for name in sorted(out):
    t = out[name]
    data = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
    header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
    blobs.append(data)
    off += len(data)
header["__metadata__"] = {"format": "pt", "generator": "tests/ref/train_make_ref.py", "torch": torch.__version__}
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_ref.safetensors")
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for d in blobs:
        f.write(d)
print("wrote", path, off, "data bytes,", len(out), "tensors")

# ---- a tiny IDX file (gzipped) for the loader test: i16 [2, 3] ----
import gzip
vals = np.array([[1, -2, 300], [-32768, 32767, 0]], dtype=">i2")
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_idx_i16.gz"), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write(bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 2, 3) + vals.tobytes())
