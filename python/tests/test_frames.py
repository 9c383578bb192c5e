"""pandas frames with mixed numeric or nullable columns are converted once to
float64; a non-numeric column is refused by name."""
import numpy as np
import pytest

import effml.over_sampling as eov
import effml.under_sampling as eun
from effml import DtypeError

pd = pytest.importorskip("pandas")


def _frames():
    rng = np.random.RandomState(0)
    y = np.array([0] * 45 + [1] * 15)
    a, b, c = rng.normal(size=60), rng.normal(size=60) > 0, rng.normal(size=60)
    plain = pd.DataFrame({"a": a, "b": b.astype(np.float64), "c": c})
    mixed = pd.DataFrame({"a": a, "b": b, "c": c})
    nullable = pd.DataFrame({"a": pd.array(a, dtype="Float64"), "b": b.astype(np.float64),
                             "c": c})
    return plain, mixed, nullable, y


def test_mixed_float_bool_frame_equals_float64_frame():
    plain, mixed, _, y = _frames()
    Xp, yp = eov.SMOTE(random_state=3).fit_resample(plain, y)
    Xm, ym = eov.SMOTE(random_state=3).fit_resample(mixed, y)
    assert Xm.shape == Xp.shape == (90, 3)
    np.testing.assert_array_equal(ym, yp)
    # the float columns are the same synthetic values; bool goes back to bool
    np.testing.assert_array_equal(Xm["a"].to_numpy(), Xp["a"].to_numpy())
    np.testing.assert_array_equal(Xm["c"].to_numpy(), Xp["c"].to_numpy())
    assert Xm["b"].dtype == np.bool_


def test_nullable_float_frame():
    plain, _, nullable, y = _frames()
    Xp, _ = eov.SMOTE(random_state=3).fit_resample(plain, y)
    Xn, _ = eov.SMOTE(random_state=3).fit_resample(nullable, y)
    np.testing.assert_allclose(np.asarray(Xn["a"], dtype=np.float64), Xp["a"].to_numpy(),
                               rtol=0, atol=0)


def test_mixed_frame_undersampler_keeps_rows():
    plain, mixed, _, y = _frames()
    Xp, _ = eun.EditedNearestNeighbours().fit_resample(plain, y)
    Xm, _ = eun.EditedNearestNeighbours().fit_resample(mixed, y)
    np.testing.assert_array_equal(Xm.index.to_numpy(), Xp.index.to_numpy())


def test_non_numeric_column_named():
    _, mixed, _, y = _frames()
    with pytest.raises(DtypeError, match="'s'"):
        eov.SMOTE().fit_resample(mixed.assign(s=["x"] * 60), y)
