"""The samplers added after the first drop-in set: CNN, OSS, ClusterCentroids,
InstanceHardnessThreshold, SVM-SMOTE, KMeans-SMOTE, SMOTEN, SMOTEENN,
SMOTETomek -- parameters as imbalanced-learn's, counts and invariants against
it (their randomness differs, so rows are not compared one by one)."""
import warnings
from collections import Counter

import numpy as np
import pytest
from sklearn import datasets

import effml.combine as ecb
import effml.over_sampling as eov
import effml.under_sampling as eun

imblearn = pytest.importorskip("imblearn")
from imblearn import combine as icb  # noqa: E402
from imblearn import over_sampling as iov  # noqa: E402
from imblearn import under_sampling as iun  # noqa: E402

warnings.simplefilter("ignore")


def bc():
    X, y = datasets.load_breast_cancer(return_X_y=True)
    keep = np.sort(np.concatenate([np.flatnonzero(y == 0)[:60], np.flatnonzero(y == 1)]))
    return X[keep], y[keep]


PAIRS = [
    (eun.CondensedNearestNeighbour, iun.CondensedNearestNeighbour, {}),
    (eun.OneSidedSelection, iun.OneSidedSelection, {}),
    (eun.ClusterCentroids, iun.ClusterCentroids, {}),
    (eun.ClusterCentroids, iun.ClusterCentroids, {"voting": "hard"}),
    (eun.InstanceHardnessThreshold, iun.InstanceHardnessThreshold, {}),
    (eov.SVMSMOTE, iov.SVMSMOTE, {}),
    (eov.KMeansSMOTE, iov.KMeansSMOTE, {"cluster_balance_threshold": 0.1}),
    (ecb.SMOTEENN, icb.SMOTEENN, {}),
    (ecb.SMOTETomek, icb.SMOTETomek, {}),
]


@pytest.mark.parametrize("ours,theirs,kw", PAIRS, ids=lambda v: getattr(v, "__name__", ""))
def test_params_and_counts(ours, theirs, kw):
    X, y = bc()
    a, b = ours(random_state=0, **kw), theirs(random_state=0, **kw)
    assert set(a.get_params()) <= set(b.get_params()) | {"n_jobs"}
    Xa, ya = a.fit_resample(X, y)
    Xb, yb = b.fit_resample(X, y)
    ca, cb = Counter(ya.tolist()), Counter(yb.tolist())
    assert ca[0] == cb[0] or ours in (eov.KMeansSMOTE, ecb.SMOTEENN)
    if ours in (eun.ClusterCentroids, eov.SVMSMOTE, ecb.SMOTETomek):
        assert ca == cb
    if getattr(a, "_by_index", False):
        assert np.array_equal(Xa, X[a.sample_indices_])


def test_cnn_kept_set_classifies_every_row():
    X, y = bc()
    s = eun.CondensedNearestNeighbour(random_state=1)
    Xr, yr = s.fit_resample(X, y)
    d = ((X[:, None, :] - Xr[None, :, :]) ** 2).sum(-1)
    assert np.array_equal(yr[d.argmin(1)], y)


def test_smoteenn_is_composition():
    X, y = bc()
    Xs, ys = eov.SMOTE(random_state=3).fit_resample(X, y)
    enn = eun.EditedNearestNeighbours(sampling_strategy="all")
    Xe, ye = enn.fit_resample(Xs, ys)
    Xc, yc = ecb.SMOTEENN(random_state=3).fit_resample(X, y)
    assert np.array_equal(Xe, Xc) and np.array_equal(ye, yc)


def test_smoten_strings():
    Xc = np.array([["a", "x"], ["b", "y"], ["a", "y"], ["c", "x"]] * 20, dtype=object)
    yc = np.array([0] * 60 + [1] * 20)
    Xr, yr = eov.SMOTEN(random_state=0).fit_resample(Xc, yc)
    assert Counter(yr.tolist()) == Counter(iov.SMOTEN(random_state=0).fit_resample(Xc, yc)[1].tolist())
    assert set(map(tuple, Xr[80:].tolist())) <= set(map(tuple, Xc[yc == 1].tolist())) | {
        (a, b) for a in "abc" for b in "xy"}


def test_iht_estimator_errors_surface():
    X, y = bc()

    class Broken:
        def fit(self, X, y):
            raise RuntimeError("boom")

        def predict_proba(self, X):
            return None

        def get_params(self, deep=True):
            return {}

    with pytest.raises(RuntimeError, match="boom"):
        eun.InstanceHardnessThreshold(estimator=Broken(), random_state=0).fit_resample(X, y)


_FLOAT_COUNT_SAMPLERS = [
    (eov.SMOTE, 1, 100.7), (eov.BorderlineSMOTE, 1, 100.7), (eov.ADASYN, 1, 100.7),
    (eov.RandomOverSampler, 1, 100.7), (eov.SVMSMOTE, 1, 100.7),
    (ecb.SMOTEENN, 1, np.float64(100.7)), (ecb.SMOTETomek, 1, 100.5),
    (eun.RandomUnderSampler, 0, 50.5), (eun.NearMiss, 0, np.float32(50.25)),
    (eun.ClusterCentroids, 0, 50.5)]


@pytest.mark.parametrize("cls,label,value", _FLOAT_COUNT_SAMPLERS,
                         ids=[c[0].__name__ for c in _FLOAT_COUNT_SAMPLERS])
def test_dict_strategy_non_integral_count_is_refused(cls, label, value):
    # imblearn raises TypeError for {1: 100.7}; effml used to truncate it to 100
    X, y = datasets.make_classification(300, 4, n_informative=3, n_redundant=0,
                                        weights=[0.8, 0.2], random_state=1)
    kw = {"random_state": 0} if "random_state" in cls().get_params() else {}
    with pytest.raises(TypeError, match=r"sampling_strategy\[%d\]=.*must be an integer" % label):
        cls(sampling_strategy={label: value}, **kw).fit_resample(X, y)
    # an integral float is a count: same rows as the int
    ok = float(int(value))
    a = cls(sampling_strategy={label: ok}, **kw).fit_resample(X, y)
    b = cls(sampling_strategy={label: int(value)}, **kw).fit_resample(X, y)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_dict_strategy_float_count_refused_like_imblearn():
    X, y = datasets.make_classification(300, 4, n_informative=3, n_redundant=0,
                                        weights=[0.8, 0.2], random_state=1)
    with pytest.raises(TypeError):
        iov.SMOTE(sampling_strategy={1: 100.7}, random_state=0).fit_resample(X, y)
    with pytest.raises(TypeError, match=r"sampling_strategy\[1\]=100\.7"):
        eov.SMOTE(sampling_strategy={1: 100.7}, random_state=0).fit_resample(X, y)
    for bad in (True, "100", None, float("nan"), float("inf")):
        with pytest.raises(TypeError, match=r"sampling_strategy\[1\]="):
            eov.SMOTE(sampling_strategy={1: bad}, random_state=0).fit_resample(X, y)
    assert np.bincount(eov.SMOTE(sampling_strategy={1: np.int32(100)}, random_state=0)
                       .fit_resample(X, y)[1]).tolist() == [238, 100]


def test_adasyn_counts_match_imblearn_on_half_ties():
    # class 2 has rows whose g_i = r_i / sum(r) * n_new is a .5 tie in exact
    # arithmetic; imblearn sums r with np.sum (pairwise) and gets 42.50000000000001,
    # which rint rounds up: the per-row counts (and the class total) must match
    X, y = datasets.make_classification(600, 6, n_informative=4, weights=[0.8, 0.15, 0.05],
                                        n_classes=3, n_clusters_per_class=1, random_state=0)
    ye = eov.ADASYN(random_state=0).fit_resample(X, y)[1]
    yi = iov.ADASYN(random_state=0).fit_resample(X, y)[1]
    assert np.bincount(ye).tolist() == np.bincount(yi).tolist() == [475, 475, 481]


@pytest.mark.parametrize("dt", [np.int64, np.uint8, np.float16, np.float32, np.float64])
def test_output_dtype_as_documented(dt):
    # docs/python.md: row-selecting samplers return X's rows in X's dtype; samplers
    # that compute rows return float32 for float32 X, float64 for anything else
    # (imblearn casts back to X's dtype instead: checked here to keep the doc honest)
    X, y = datasets.make_classification(300, 4, n_informative=3, n_redundant=0,
                                        weights=[0.8, 0.2], random_state=1)
    Xd = (X * 10).astype(dt)
    want = np.float32 if dt == np.float32 else np.float64
    for S in (eov.SMOTE, eov.ADASYN, eun.ClusterCentroids, ecb.SMOTEENN):
        Xr, yr = S(random_state=0).fit_resample(Xd, y)
        assert Xr.dtype == want, (S.__name__, Xr.dtype)
        n = len(y)
        if S in (eov.SMOTE, eov.ADASYN):  # originals first, unchanged (converted exactly)
            np.testing.assert_array_equal(Xr[:n], Xd.astype(want))
    for S in (eov.RandomOverSampler, eun.RandomUnderSampler, eun.NearMiss, eun.TomekLinks):
        s = S()
        Xr, yr = s.fit_resample(Xd, y)
        assert Xr.dtype == Xd.dtype, (S.__name__, Xr.dtype)
        np.testing.assert_array_equal(Xr, Xd[s.sample_indices_])
    assert iov.SMOTE(random_state=0).fit_resample(Xd, y)[0].dtype == Xd.dtype


@pytest.mark.parametrize("cls,kw", [(eov.SMOTE, {}), (eov.ADASYN, {}), (eov.BorderlineSMOTE, {}),
                                    (eov.SVMSMOTE, {})])
def test_large_outputs_adopted_from_the_library_equal_the_into_path(monkeypatch, cls, kw):
    """Outputs over _LIBRARY_MAPS_BYTES come from the C allocator (adopted), smaller ones
    through effml_sampler_resample_into: both paths give the same rows and labels."""
    import effml._sampler_base as sb
    X, y = datasets.make_classification(n_samples=600, n_features=6, weights=[0.85, 0.15],
                                        random_state=3)
    seen = []
    real = sb._lib.fn

    def spy(name):
        seen.append(name)
        return real(name)

    monkeypatch.setattr(sb._lib, "fn", spy)
    monkeypatch.setattr(sb, "_LIBRARY_MAPS_BYTES", 1 << 62)  # everything via _into
    xa, ya = cls(random_state=0, **kw).fit_resample(X, y)
    into_calls = seen.count("effml_sampler_resample_into")
    seen.clear()
    monkeypatch.setattr(sb, "_LIBRARY_MAPS_BYTES", 0)  # everything library-allocated
    xb, yb = cls(random_state=0, **kw).fit_resample(X, y)
    assert into_calls >= 1 and "effml_sampler_resample_into" not in seen
    assert "effml_sampler_resample" in seen
    assert xa.dtype == xb.dtype and ya.dtype == yb.dtype
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
