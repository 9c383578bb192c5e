#!/usr/bin/python3
"""PyTorch side of bench/bench_train.c: one training epoch of the
784-256-128-10 ReLU MLP on Fashion-MNIST (random data of the same shape when
the dataset is absent), batch 128, torch.optim.AdamW defaults (lr 1e-3),
softmax cross-entropy, shuffled every epoch -- the same work as
effml_train_classifier.  Median of --reps warm epochs after one warm-up epoch.

Threads: torch.set_num_threads(N) with N = $OPENBLAS_NUM_THREADS (default 2),
the count the C side runs with.  Reads ours_s from $EFFML_BENCH_TRAIN_OURS
(default /tmp/effml_bench_train_ours.json, written by bench_train) and prints
one JSON line: bench, case, ours_s, baseline, baseline_s, speedup.
Run with Debian's /usr/bin/python3 (python3-torch)."""
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

CASE = "mlp_784_256_128_10_adamw_b128_epoch"
DATA = "/usr/share/datasets/fashion-mnist"


def load():
    try:
        with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
        with gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y), "fashion-mnist"
    except OSError:
        g = torch.Generator().manual_seed(0)
        return torch.rand(60000, 784, generator=g), torch.arange(60000) % 10, "random"


def main():
    reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 3
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y, data = load()
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = 128

    def epoch():
        perm = torch.randperm(x.shape[0])
        for s in range(0, x.shape[0], bs):
            idx = perm[s:s + bs]
            xb, yb = x[idx], y[idx]
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    epoch()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    base = statistics.median(times)
    ours = None
    path = os.environ.get("EFFML_BENCH_TRAIN_OURS", "/tmp/effml_bench_train_ours.json")
    try:
        with open(path) as f:
            rec = json.load(f)
        if rec.get("case") == CASE:
            ours = rec["ours_s"]
    except (OSError, ValueError, KeyError):
        pass
    print(json.dumps({"bench": "train", "case": CASE, "ours_s": ours, "baseline": "pytorch",
                      "baseline_s": round(base, 6), "speedup": round(base / ours, 4) if ours else None,
                      "threads": threads, "batch": bs, "n": int(x.shape[0]), "data": data, "reps": reps,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
