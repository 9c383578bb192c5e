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
