#!/usr/bin/python3
"""Downstream quality of the imbalanced-learn-parity samplers: the same
sampler from libeffml's Python drop-in (effml.*) and from imbalanced-learn
0.10.0, then the same fixed classifier (scikit-learn LogisticRegression,
lbfgs, C = 1, max_iter = 2000) trained on the re-sampled training split;
balanced accuracy on the untouched test split.  Over seeds 0..S-1 (the
seed drives the stratified 70/30 split and the sampler's random_state), we
print mean ± sd of ours and imblearn's and the paired difference (ours -
imblearn) with its sd; "within noise" means |mean difference| <= 2 sd /
sqrt(S) of the paired differences or <= 0.005.

Data (scikit-learn's generators and bundled sets, standardised on the
training split): "blobs" = make_classification(n_samples=3000, n_features=10,
n_informative=5, weights=[0.9, 0.1], flip_y=0.02, class_sep=0.8,
random_state=1); "cancer" = breast cancer with class 0 cut to its first 60
rows (60 / 357).  SMOTEN runs on the blobs discretised to 5 quantile bins
per feature.  IHT uses a scikit-learn RandomForest(n_estimators=50) on both
sides, SVM-SMOTE scikit-learn's SVC on both sides.  Two extra KMeans-SMOTE
rows separate its causes of difference: "_kmeans10x300" runs ours with the
earlier k-means (10 runs of up to 300 iterations) against imblearn's
default; "_paper_exponent" gives both sides the paper's density exponent
(from the feature count, our "auto"; imblearn 0.10's "auto" uses the
cluster's row count).

  EFFML_LIBRARY=build/lib/libeffml.so.0 PYTHONPATH=python \\
    /usr/bin/python3 bench/sampler_quality.py [--seeds 5] [--only NAME,...] > out.jsonl
Prints one JSON line per (data, sampler) to stdout and a Markdown table to
stderr."""
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import KBinsDiscretizer, StandardScaler

warnings.simplefilter("ignore")
S = 5
only = None
for i, a in enumerate(sys.argv[1:]):
    if a == "--seeds":
        S = int(sys.argv[i + 2])
    if a == "--only":
        only = set(sys.argv[i + 2].split(","))

import effml.combine as ecb  # noqa: E402
import effml.over_sampling as eov  # noqa: E402
import effml.under_sampling as eun  # noqa: E402
from imblearn import combine as icb  # noqa: E402
from imblearn import over_sampling as iov  # noqa: E402
from imblearn import under_sampling as iun  # noqa: E402


def rf(seed):
    return RandomForestClassifier(n_estimators=50, random_state=seed)


class KMeansSMOTEFullKMeans(eov.KMeansSMOTE):
    """Ours with the k-means of before (10 runs of up to 300 Lloyd iterations)
    instead of the default 3 x 20: does the faster default cost quality?"""

    def _set_options(self, opt, n_features):
        super()._set_options(opt, n_features)
        opt.kmeans_n_init, opt.kmeans_max_iter = 10, 300


def paper_exponent(X):
    """The paper's "auto" density exponent (ours): from the feature count."""
    return 0.16 * (np.log(X.shape[1]) / np.log(1.6)) ** 1.8


CASES = [  # name, ours, theirs, kwargs(seed)
    ("SMOTE", eov.SMOTE, iov.SMOTE, lambda s: {"random_state": s}),
    ("BorderlineSMOTE", eov.BorderlineSMOTE, iov.BorderlineSMOTE, lambda s: {"random_state": s}),
    ("ADASYN", eov.ADASYN, iov.ADASYN, lambda s: {"random_state": s}),
    ("SVMSMOTE", eov.SVMSMOTE, iov.SVMSMOTE, lambda s: {"random_state": s}),
    ("KMeansSMOTE", eov.KMeansSMOTE, iov.KMeansSMOTE,
     lambda s: {"random_state": s, "cluster_balance_threshold": 0.05}),
    ("KMeansSMOTE_kmeans10x300", KMeansSMOTEFullKMeans, iov.KMeansSMOTE,
     lambda s: {"random_state": s, "cluster_balance_threshold": 0.05}),
    ("KMeansSMOTE_paper_exponent", eov.KMeansSMOTE, iov.KMeansSMOTE,
     lambda s: {"random_state": s, "cluster_balance_threshold": 0.05, "density_exponent": "paper"}),
    ("SMOTEN", eov.SMOTEN, iov.SMOTEN, lambda s: {"random_state": s}),
    ("NearMiss1", eun.NearMiss, iun.NearMiss, lambda s: {"version": 1}),
    ("NearMiss2", eun.NearMiss, iun.NearMiss, lambda s: {"version": 2}),
    ("NearMiss3", eun.NearMiss, iun.NearMiss, lambda s: {"version": 3}),
    ("ENN", eun.EditedNearestNeighbours, iun.EditedNearestNeighbours, lambda s: {}),
    ("RENN", eun.RepeatedEditedNearestNeighbours, iun.RepeatedEditedNearestNeighbours, lambda s: {}),
    ("AllKNN", eun.AllKNN, iun.AllKNN, lambda s: {}),
    ("NCL", eun.NeighbourhoodCleaningRule, iun.NeighbourhoodCleaningRule, lambda s: {}),
    ("TomekLinks", eun.TomekLinks, iun.TomekLinks, lambda s: {}),
    ("CNN", eun.CondensedNearestNeighbour, iun.CondensedNearestNeighbour,
     lambda s: {"random_state": s}),
    ("OSS", eun.OneSidedSelection, iun.OneSidedSelection, lambda s: {"random_state": s}),
    ("ClusterCentroids", eun.ClusterCentroids, iun.ClusterCentroids,
     lambda s: {"random_state": s}),
    ("IHT", eun.InstanceHardnessThreshold, iun.InstanceHardnessThreshold,
     lambda s: {"random_state": s, "estimator": rf(s)}),
    ("SMOTEENN", ecb.SMOTEENN, icb.SMOTEENN, lambda s: {"random_state": s}),
    ("SMOTETomek", ecb.SMOTETomek, icb.SMOTETomek, lambda s: {"random_state": s}),
]


def datasets():
    X, y = make_classification(n_samples=3000, n_features=10, n_informative=5,
                               weights=[0.9, 0.1], flip_y=0.02, class_sep=0.8, random_state=1)
    yield "blobs", X, y.astype(np.int64)
    Xc, yc = load_breast_cancer(return_X_y=True)
    keep = np.ones(len(yc), bool)
    keep[np.flatnonzero(yc == 0)[60:]] = False
    yield "cancer", Xc[keep], yc[keep].astype(np.int64)


def score(sampler, Xtr, ytr, Xte, yte):
    Xr, yr = sampler.fit_resample(Xtr, ytr)
    clf = LogisticRegression(max_iter=2000).fit(Xr, yr)
    return balanced_accuracy_score(yte, clf.predict(Xte))


def main():
    rows = []
    print(json.dumps({"bench": "sampler_quality", "case": "machine", "cpus": os.cpu_count(),
                      "loadavg": list(os.getloadavg()), "seeds": S,
                      "classifier": "LogisticRegression(max_iter=2000)"}), flush=True)
    for dname, X, y in datasets():
        for name, ours, theirs, kw in CASES:
            if only and name not in only:
                continue
            if name == "SMOTEN" and dname != "blobs":
                continue
            a, b = [], []
            t0 = time.perf_counter()
            for s in range(S):
                Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y,
                                                      random_state=s)
                sc = StandardScaler().fit(Xtr)
                Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
                if name == "SMOTEN":
                    kb = KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile").fit(Xtr)
                    Xtr, Xte = kb.transform(Xtr), kb.transform(Xte)
                k = kw(s)
                if k.get("density_exponent") == "paper":  # both sides: the paper's exponent
                    k["density_exponent"] = float(paper_exponent(Xtr))
                a.append(float(score(ours(**k), Xtr, ytr, Xte, yte)))
                b.append(float(score(theirs(**k), Xtr, ytr, Xte, yte)))
            diff = [p - q for p, q in zip(a, b)]
            md, sd = statistics.mean(diff), statistics.stdev(diff) if S > 1 else 0.0
            line = {"bench": "sampler_quality", "case": f"{dname}_{name}", "data": dname,
                    "sampler": name, "seeds": S,
                    "ours_mean": statistics.mean(a), "ours_sd": statistics.stdev(a) if S > 1 else 0.0,
                    "imblearn_mean": statistics.mean(b),
                    "imblearn_sd": statistics.stdev(b) if S > 1 else 0.0,
                    "diff_mean": md, "diff_sd": sd,
                    "within_noise": bool(abs(md) <= max(0.005, 2 * sd / S ** 0.5)),
                    "ours": a, "imblearn": b, "wall_s": time.perf_counter() - t0}
            rows.append(line)
            print(json.dumps(line), flush=True)
    print("| data | sampler | ours | imblearn 0.10 | ours − imblearn (paired) | within noise |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        print(f"| {r['data']} | {r['sampler']} | {r['ours_mean']:.3f} ± {r['ours_sd']:.3f} | "
              f"{r['imblearn_mean']:.3f} ± {r['imblearn_sd']:.3f} | "
              f"{r['diff_mean']:+.3f} ± {r['diff_sd']:.3f} | "
              f"{'yes' if r['within_noise'] else '**no**'} |", file=sys.stderr)


if __name__ == "__main__":
    main()
