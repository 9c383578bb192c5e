#!/usr/bin/python3
"""Reference values for tests/test_adapter*.c (run with Debian's /usr/bin/python3: torch 1.13).

Implements the reference maths of PHM/Compacter (arXiv 2102.08597, 2106.04647), LoRA (arXiv 2106.09685) and LoKr (arXiv 2309.14859) with PyTorch autograd in float64:
  PHM/LPHM  (rabeehk/compacter PHMLinear: H = sum_i kron(A_i, B_i), y = x H + b)
  adapter   (HyperComplexAdapter: up(gelu_new(down(x))) + x, shared phm rule)
  LoRA      (PEFT: y = x W^T + b + s (x A^T) B^T)
  LoKr      (PEFT: dW = s kron(w1, w2), y = x (W + dW)^T + b)
Inputs are drawn in float64, rounded to float32, and the float32 values are what the
C tests load; outputs are float64 results stored as F64.

Writes (safetensors written by hand; the `safetensors` package is absent):
  adapter_ref.safetensors                 all the cases, keys "<case>.<name>"
  adapter_peft/adapter_config.json + adapter_model.safetensors   (PEFT LoRA, 2 modules)
  adapter_peft_badshape/...               lora_A of module 1 with the wrong in dim
  adapter_peft_missing/...                lora_B of module 1 missing
  adapter_adapterhub.safetensors          AdapterHub Compacter names, 2 blocks + shared rule
"""
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(1234)
rng = np.random.default_rng(1234)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, np.ndarray f32/f64).  Contiguous, in the given order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    off = 0
    blobs = []
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        dt = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def f32(shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t64(a):
    return torch.tensor(a.astype(np.float64), requires_grad=True)


out = []


def emit(case, name, a):
    if isinstance(a, torch.Tensor):
        a = a.detach().numpy()
    out.append((f"{case}.{name}", np.asarray(a)))


def kron_sum(rule, B):
    # H = sum_i kron(A_i, B_i): A the outer factor (seq2seq/hypercomplex/kronecker.py)
    return sum(torch.kron(rule[i], B[i]) for i in range(rule.shape[0]))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


# ---- LPHM: n 3, in 6, out 9, r 2, batch 4 (a hand-checkable size) ----
def lphm_case(case, n, fin, fout, r, batch):
    x, g = f32((batch, fin)), f32((batch, fout))
    rule, wl, wr, b = f32((n, n, n)), f32((n, fin // n, r)), f32((n, r, fout // n)), f32((fout,))
    for k, v in [("x", x), ("gy", g), ("phm_rule", rule), ("W_left", wl), ("W_right", wr), ("b", b)]:
        emit(case, k, v)
    X, R, L, Rt, B = t64(x), t64(rule), t64(wl), t64(wr), t64(b)
    H = kron_sum(R, torch.bmm(L, Rt))
    y = X @ H + B
    (y * torch.tensor(g.astype(np.float64))).sum().backward()
    emit(case, "y", y)
    emit(case, "H", H)
    for k, v in [("dx", X), ("dphm_rule", R), ("dW_left", L), ("dW_right", Rt), ("db", B)]:
        emit(case, k, v.grad)


def phm_case(case, n, fin, fout, batch):
    x, g = f32((batch, fin)), f32((batch, fout))
    rule, w, b = f32((n, n, n)), f32((n, fin // n, fout // n)), f32((fout,))
    for k, v in [("x", x), ("gy", g), ("phm_rule", rule), ("W", w), ("b", b)]:
        emit(case, k, v)
    X, R, W, B = t64(x), t64(rule), t64(w), t64(b)
    y = X @ kron_sum(R, W) + B
    (y * torch.tensor(g.astype(np.float64))).sum().backward()
    emit(case, "y", y)
    for k, v in [("dx", X), ("dphm_rule", R), ("dW", W), ("db", B)]:
        emit(case, k, v.grad)


lphm_case("lphm", 3, 6, 9, 2, 4)
phm_case("phm", 2, 4, 6, 3)

# ---- adapter block: features 8, d 4, n 2, r 1, gelu_new, shared rule, residual ----
n, k, d, batch = 2, 8, 4, 3
x, g = f32((batch, k)), f32((batch, k))
rule = f32((n, n, n))
dl, dr, db_ = f32((n, k // n, 1)), f32((n, 1, d // n)), f32((d,), 0.1)
ul, ur, ub = f32((n, d // n, 1)), f32((n, 1, k // n)), f32((k,), 0.1)
for kk, v in [("x", x), ("gy", g), ("phm_rule", rule), ("down_W_left", dl), ("down_W_right", dr),
              ("down_b", db_), ("up_W_left", ul), ("up_W_right", ur), ("up_b", ub)]:
    emit("adapter", kk, v)
X, R = t64(x), t64(rule)
P = [t64(a) for a in (dl, dr, db_, ul, ur, ub)]
h = X @ kron_sum(R, torch.bmm(P[0], P[1])) + P[2]
y = gelu_new(h) @ kron_sum(R, torch.bmm(P[3], P[4])) + P[5] + X
(y * torch.tensor(g.astype(np.float64))).sum().backward()
emit("adapter", "y", y)
emit("adapter", "dx", X.grad)
emit("adapter", "dphm_rule", R.grad)
for kk, v in zip(("down_W_left", "down_W_right", "down_b", "up_W_left", "up_W_right", "up_b"), P):
    emit("adapter", "d" + kk, v.grad)

# ---- LoRA: in 5, out 4, r 2, alpha 4 (s = 2), batch 3 ----
x, g = f32((3, 5)), f32((3, 4))
W, b, A, Bm = f32((4, 5)), f32((4,)), f32((2, 5)), f32((4, 2))
for kk, v in [("x", x), ("gy", g), ("weight", W), ("bias", b), ("lora_A", A), ("lora_B", Bm)]:
    emit("lora", kk, v)
X, Wt, bt, At, Bt = (t64(a) for a in (x, W, b, A, Bm))
y = X @ Wt.T + bt + 2.0 * (X @ At.T) @ Bt.T
(y * torch.tensor(g.astype(np.float64))).sum().backward()
emit("lora", "y", y)
for kk, v in [("dx", X), ("dlora_A", At), ("dlora_B", Bt)]:
    emit("lora", kk, v.grad)

# ---- LoKr: in 6 -> (2, 3), out 4 -> (2, 2), r 8 (both full), alpha 4 -> PEFT scale 0.5 ----
x, g = f32((3, 6)), f32((3, 4))
W, b, w1, w2 = f32((4, 6)), f32((4,)), f32((2, 2)), f32((2, 3))
for kk, v in [("x", x), ("gy", g), ("weight", W), ("bias", b), ("lokr_w1", w1), ("lokr_w2", w2)]:
    emit("lokr", kk, v)
X, Wt, bt, w1t, w2t = (t64(a) for a in (x, W, b, w1, w2))
dW = 0.5 * torch.kron(w1t, w2t)
y = X @ (Wt + dW).T + bt
(y * torch.tensor(g.astype(np.float64))).sum().backward()
emit("lokr", "y", y)
emit("lokr", "delta_weight", dW)
for kk, v in [("dx", X), ("dlokr_w1", w1t), ("dlokr_w2", w2t)]:
    emit("lokr", kk, v.grad)

write_safetensors(os.path.join(HERE, "adapter_ref.safetensors"), out, {"format": "pt"})

# ---- PEFT LoRA directory: two q/v modules of a toy model, r 2, lora_alpha 6 ----
mods = ["base_model.model.layers.0.self_attn.q_proj", "base_model.model.layers.0.self_attn.v_proj"]
peft = [(mods[0] + ".lora_A.weight", f32((2, 8))), (mods[0] + ".lora_B.weight", f32((6, 2))),
        (mods[1] + ".lora_A.weight", f32((2, 8))), (mods[1] + ".lora_B.weight", f32((6, 2)))]
cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 6, "target_modules": ["q_proj", "v_proj"],
       "use_rslora": False, "bias": "none", "fan_in_fan_out": False, "lora_dropout": 0.0,
       "task_type": None, "base_model_name_or_path": "toy"}


def peft_dir(name, tensors):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors, {"format": "pt"})


peft_dir("adapter_peft", peft)
peft_dir("adapter_peft_badshape", [peft[0], peft[1], (peft[2][0], f32((2, 7))), peft[3]])
peft_dir("adapter_peft_missing", peft[:3])

# ---- AdapterHub Compacter file: BERT-like names, 2 blocks, k 8, d 4, n 2, r 1 ----
ah = []
for i in range(2):
    pre = f"bert.encoder.layer.{i}.output.adapters.task."
    ah += [(pre + "adapter_down.0.W_left", f32((2, 4, 1))), (pre + "adapter_down.0.W_right", f32((2, 1, 2))),
           (pre + "adapter_down.0.b", f32((4,))), (pre + "adapter_up.W_left", f32((2, 2, 1))),
           (pre + "adapter_up.W_right", f32((2, 1, 4))), (pre + "adapter_up.b", f32((8,)))]
ah.append(("bert.shared_parameters.task.phm_rule", f32((2, 2, 2))))
write_safetensors(os.path.join(HERE, "adapter_adapterhub.safetensors"), ah, {"format": "pt"})
print("wrote", len(out), "reference tensors")
