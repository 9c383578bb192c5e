#!/usr/bin/python3
"""PyTorch side of bench/bench_train.c: one training epoch of the
784-256-128-10 ReLU MLP on Fashion-MNIST (random data of the same shape when
the dataset is absent), batch 128, torch.optim.AdamW defaults (lr 1e-3),
softmax cross-entropy, shuffled every epoch -- the same work as
effml_train_classifier.  --reps warm epochs (default 5) after one warm-up epoch.

Threads: for every thread count bench_train ran (its record in
$EFFML_BENCH_TRAIN_OURS, default /tmp/effml_bench_train_ours.json),
torch.set_num_threads(N) with the same N; one JSON line per count: bench,
case, threads, ours_s / baseline_s (medians), *_min / *_max, the raw runs and
speedup = median(baseline) / median(ours).
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
    reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 5
    path = os.environ.get("EFFML_BENCH_TRAIN_OURS", "/tmp/effml_bench_train_ours.json")
    with open(path) as f:
        rec = json.load(f)
    if rec.get("case") != CASE:
        raise SystemExit(f"train_baseline: {path} is not a record of {CASE}")
    torch.manual_seed(0)
    x, y, data = load()
    bs = 128
    for ours in rec["runs"]:
        threads = int(ours["threads"])
        torch.set_num_threads(threads)
        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                    torch.nn.ReLU(), torch.nn.Linear(128, 10))
        opt = torch.optim.AdamW(model.parameters())
        loss_fn = torch.nn.CrossEntropyLoss()

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
        o = ours["ours_runs"]
        om, bm = statistics.median(o), statistics.median(times)
        print(json.dumps({"bench": "train", "case": CASE, "threads": threads, "ours_s": om,
                          "ours_min": min(o), "ours_max": max(o), "baseline": "pytorch",
                          "baseline_s": bm, "baseline_min": min(times), "baseline_max": max(times),
                          "speedup": bm / om, "ours_runs": o, "baseline_runs": times, "batch": bs,
                          "n": int(x.shape[0]), "data": data, "torch": torch.__version__,
                          **{k: ours[k] for k in ("pool", "pool_spin_us") if k in ours}}), flush=True)


if __name__ == "__main__":
    main()
