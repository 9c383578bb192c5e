"""Parameter validation at the Python boundary: values the C library would
read differently (0 = "the default", ints wider than the C field) are refused
with a ValueError naming the parameter."""
import numpy as np
import pytest

import effml.combine as ecb
import effml.over_sampling as eov
import effml.under_sampling as eun
from effml.neighbors import kneighbors


def _data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    y = np.array([0] * 45 + [1] * 15)
    return X, y


NEIGHBOUR_PARAMS = [
    (eov.SMOTE, "k_neighbors"), (eov.BorderlineSMOTE, "k_neighbors"),
    (eov.BorderlineSMOTE, "m_neighbors"), (eov.ADASYN, "n_neighbors"),
    (eov.SVMSMOTE, "k_neighbors"), (eov.SVMSMOTE, "m_neighbors"),
    (eov.KMeansSMOTE, "k_neighbors"), (eov.SMOTEN, "k_neighbors"),
    (eun.EditedNearestNeighbours, "n_neighbors"), (eun.NearMiss, "n_neighbors"),
    (eun.NearMiss, "n_neighbors_ver3"), (eun.RepeatedEditedNearestNeighbours, "n_neighbors"),
    (eun.AllKNN, "n_neighbors"), (eun.NeighbourhoodCleaningRule, "n_neighbors"),
    (eun.CondensedNearestNeighbour, "n_neighbors"),
]


@pytest.mark.parametrize("cls,param", NEIGHBOUR_PARAMS)
@pytest.mark.parametrize("value", [0, -1])
def test_neighbour_count_below_one_is_refused(cls, param, value):
    X, y = _data()
    if cls is eov.SMOTEN:
        X = (X > 0).astype(np.float64)
    with pytest.raises(ValueError, match="%s.*%d" % (param, value)):
        cls(**{param: value}).fit_resample(X, y)


def test_smote_k0_is_not_k5():
    # Before: k_neighbors=0 reached C as "default" and ran as k=5.
    X, y = _data()
    Xa, ya = eov.SMOTE(k_neighbors=5, random_state=1).fit_resample(X, y)
    with pytest.raises(ValueError, match="k_neighbors"):
        eov.SMOTE(k_neighbors=0, random_state=1).fit_resample(X, y)


def test_combine_neighbour_counts_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="k_neighbors"):
        ecb.SMOTEENN(smote=eov.SMOTE(k_neighbors=0)).fit_resample(X, y)
    with pytest.raises(ValueError, match="n_neighbors"):
        ecb.SMOTEENN(enn=eun.EditedNearestNeighbours(n_neighbors=0, sampling_strategy="all")).fit_resample(X, y)


def test_neighbour_object_with_too_few_neighbours():
    from sklearn.neighbors import NearestNeighbors
    X, y = _data()
    # imblearn queries the object on the training rows: n_neighbors=1 is only the row itself.
    with pytest.raises(ValueError, match="k_neighbors"):
        eov.SMOTE(k_neighbors=NearestNeighbors(n_neighbors=1)).fit_resample(X, y)
    Xa, _ = eov.SMOTE(k_neighbors=NearestNeighbors(n_neighbors=2), random_state=0).fit_resample(X, y)
    assert Xa.shape == (90, 3)


def test_kneighbors_k0_refused():
    X, _ = _data()
    with pytest.raises(ValueError, match="k must be"):
        kneighbors(X, 0)


# ---------------------------------------------------------------- ints wider than the C field

from effml.mixture import temperature_at  # noqa: E402
from effml.selective import Cascade  # noqa: E402


def _cascade():
    rng = np.random.RandomState(0)
    L = [rng.normal(size=(20, 3)) for _ in range(3)]
    return Cascade(L, [1, 2, 3])


def test_cascade_stage_index_range_checked():
    c = _cascade()
    c.set_exit_rule(0, "threshold", 0.5)
    before = c.exit_rule(0)
    with pytest.raises(ValueError, match="stage"):
        c.set_exit_rule(2**32, "threshold", 0.123)  # wrapped to stage 0 before
    assert c.exit_rule(0)[:3] == before[:3] == ("threshold", 0.5, np.inf)
    with pytest.raises(IndexError, match="stage=3"):
        c.set_exit_rule(3, "threshold", 0.1)
    c.run()
    with pytest.raises(IndexError, match="stage=99"):
        c.exit_fraction(99)  # returned 0.0 before
    with pytest.raises(IndexError, match="stage=-1"):
        c.exit_rule(-1)
    assert sum(c.exit_fraction(s) for s in range(3)) == pytest.approx(1.0)


def test_temperature_step_too_wide():
    assert temperature_at(10, kind="linear", t_start=2.0, t_end=1.0, total_steps=10) == 1.0
    with pytest.raises(ValueError, match="step"):
        temperature_at(2**64, kind="linear", t_start=2.0, t_end=1.0, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        temperature_at(1, kind="linear", t_start=2.0, t_end=1.0, total_steps=2**63)


def test_n_jobs_and_random_state_too_wide():
    X, y = _data()
    with pytest.raises(ValueError, match="n_jobs"):
        eov.SMOTE(n_jobs=2**32 + 1).fit_resample(X, y)
    with pytest.raises(ValueError, match="random_state"):
        eov.SMOTE(random_state=2**64).fit_resample(X, y)
    with pytest.raises(ValueError, match="random_state"):
        eov.SMOTE(random_state=-1).fit_resample(X, y)
    with pytest.raises(ValueError, match="k_neighbors"):
        eov.SMOTE(k_neighbors=2**64 + 5).fit_resample(X, y)
    # in range: the largest seed still works
    Xa, _ = eov.SMOTE(random_state=2**64 - 1).fit_resample(X, y)
    assert Xa.shape == (90, 3)


def test_c_int_helper():
    from effml._core import c_int
    assert c_int(np.int64(7), "x") == 7
    assert c_int(2**64 - 1, "x", "uint64") == 2**64 - 1
    for bad, ct in [(2**31, "int32"), (-1, "uint64"), (2**63, "int64"), (1.0, "int64"),
                    (True, "int64")]:
        with pytest.raises(ValueError, match="x"):
            c_int(bad, "x", ct)


def test_docs_table_lists_every_sampler():
    import os
    import effml.dask as edk
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "python.md")).read()
    table = doc.split("## What is there", 1)[1].split("\n## ", 1)[0]
    for mod in (eov, eun, ecb, edk):
        for name in mod.__all__:
            assert "`%s`" % name in table, name
    assert "no cap" in table


def test_neighbour_counts_beyond_60():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(200, 3))
    y = np.array([0] * 120 + [1] * 80)
    Xa, ya = eov.SMOTE(k_neighbors=75, random_state=0).fit_resample(X, y)  # 80 minority rows
    assert (ya == 1).sum() == 120
    idx = kneighbors(X, 90)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    np.testing.assert_array_equal(idx, np.argsort(d2, axis=1, kind="stable")[:, :90])
    with pytest.raises(ValueError, match="80"):
        eov.SMOTE(k_neighbors=80).fit_resample(X, y)
