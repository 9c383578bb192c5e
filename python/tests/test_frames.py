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


# ---------------------------------------------------------------- SMOTENC / SMOTEN frames

def _mixed(n=240, seed=0):
    """Continuous float and int columns, a pandas categorical (with an unused
    category), an object column and a bool column; a 20 % minority."""
    rng = np.random.RandomState(seed)
    y = (rng.rand(n) < 0.2).astype(int)
    df = pd.DataFrame({
        "num": rng.randn(n) + 2 * y,
        "age": rng.randint(18, 80, n),
        "color": pd.Categorical(rng.choice(["red", "green", "blue"], n),
                                categories=["red", "green", "blue", "unused"]),
        "city": rng.choice(["oslo", "lima", "pune"], n).astype(object),
        "flag": rng.rand(n) < 0.5,
    }, index=np.arange(n) * 3 + 7)
    return df, y


def _check_synthetic(df, y, Xr, yr, cat_cols):
    n = len(df)
    assert list(Xr.columns) == list(df.columns)
    assert list(Xr.dtypes) == list(df.dtypes)  # categories (with 'unused') included
    assert Xr.index.equals(pd.RangeIndex(len(Xr)))
    syn, mino = Xr.iloc[n:], df[y == 1]
    assert len(syn) == (y == 0).sum() - (y == 1).sum() and (yr[n:] == 1).all()
    # the original rows come first, unchanged
    pd.testing.assert_frame_equal(Xr.iloc[:n].reset_index(drop=True), df.reset_index(drop=True))
    for c in cat_cols:  # a synthetic category is the vote of minority rows
        assert set(syn[c].tolist()) <= set(mino[c].tolist()), c
    return syn, mino


def test_smotenc_mixed_frame_matches_imblearn_counts():
    iov = pytest.importorskip("imblearn.over_sampling")
    df, y = _mixed()
    ours = eov.SMOTENC(categorical_features=["color", "city", "flag"], random_state=0)
    Xr, yr = ours.fit_resample(df, y)
    syn, mino = _check_synthetic(df, y, Xr, yr, ["color", "city", "flag"])
    assert syn["num"].between(mino["num"].min(), mino["num"].max()).all()
    # an int continuous column is interpolated then cast back to int64 (as imblearn)
    assert syn["age"].between(mino["age"].min(), mino["age"].max()).all()
    # imblearn 0.10 refuses this frame with a bool column among the categoricals
    # ("Cannot cast object dtype to float64"); without it the counts agree
    sub = df.drop(columns="flag")
    _, y_ref = iov.SMOTENC(categorical_features=[2, 3], random_state=0).fit_resample(sub, y)
    _, y_ours = eov.SMOTENC(categorical_features=[2, 3], random_state=0).fit_resample(sub, y)
    assert np.array_equal(np.bincount(y_ours), np.bincount(y_ref))
    # 'auto' takes the category and object columns (not bool: that is numeric to pandas)
    Xa, _ = eov.SMOTENC(categorical_features="auto", random_state=0).fit_resample(sub, y)
    pd.testing.assert_frame_equal(Xa, eov.SMOTENC(categorical_features=["color", "city"],
                                                  random_state=0).fit_resample(sub, y)[0])


def test_smotenc_frame_equals_object_array():
    df, y = _mixed()
    cats = [2, 3, 4]
    Xf, _ = eov.SMOTENC(categorical_features=cats, random_state=3).fit_resample(df, y)
    Xa, _ = eov.SMOTENC(categorical_features=cats, random_state=3).fit_resample(
        df.to_numpy(dtype=object), y)
    assert Xa.shape == Xf.shape
    for j, c in enumerate(df.columns):
        if j in cats:
            assert Xa[:, j].tolist() == Xf[c].astype(object).tolist(), c
        else:
            assert np.allclose(Xa[len(df):, j].astype(float), Xf[c].iloc[len(df):], atol=1) \
                if c == "age" else np.allclose(Xa[:, j].astype(float), Xf[c]), c


def test_smotenc_missing_values_are_a_category():
    """None / NaN / pandas.NA in a categorical column form a category of their own
    (as scikit-learn's one-hot encoder): a class whose column is all missing
    gets missing synthetic values; the missing marker comes back as it was."""
    df, y = _mixed()
    df["city"] = df["city"].where(y == 0, None)             # minority: all None
    col = df["color"].copy()
    col[(y == 1) & (np.arange(len(y)) % 2 == 0)] = np.nan   # half the minority NaN
    df["color"] = col
    df["code"] = pd.array(np.where(y == 1, None, np.arange(len(y)) % 3), dtype="Int64")
    Xr, yr = eov.SMOTENC(categorical_features=["color", "city", "code"],
                         random_state=0).fit_resample(df, y)
    syn = Xr.iloc[len(df):]
    assert syn["city"].map(lambda v: v is None).all()
    assert syn["code"].isna().all() and str(Xr["code"].dtype) == "Int64"
    assert set(syn["color"].dropna()) <= set(df["color"][y == 1].dropna())
    assert Xr["color"].dtype == df["color"].dtype
    # NaN in a float categorical column: one category, not one per NaN
    f = pd.DataFrame({"x": np.r_[np.random.RandomState(1).randn(60)],
                      "g": np.where(np.arange(60) < 50, np.arange(60) % 2, np.nan)})
    yy = (np.arange(60) >= 45).astype(int)
    Xg, _ = eov.SMOTENC(categorical_features=["g"], random_state=0).fit_resample(f, yy)
    assert set(Xg["g"].iloc[60:].dropna()) <= {0.0, 1.0}


def test_smotenc_mixed_type_object_column():
    df, y = _mixed()
    df["mix"] = np.array([1, "x", 2.5, ("t", 1)] * (len(df) // 4), dtype=object)
    Xr, _ = eov.SMOTENC(categorical_features=["color", "city", "mix"],
                        random_state=0).fit_resample(df, y)
    vals = set(map(repr, df["mix"][y == 1]))
    assert set(map(repr, Xr["mix"].iloc[len(df):])) <= vals  # types kept: 1 stays an int
    df["mix"] = [[1]] * len(df)
    with pytest.raises(ValueError, match="'mix'.*unhashable"):
        eov.SMOTENC(categorical_features=["color", "city", "mix"],
                    random_state=0).fit_resample(df, y)


def test_smotenc_errors_name_the_column():
    df, y = _mixed()
    with pytest.raises(ValueError, match="column 'city' \\(object\\) is not numeric"):
        eov.SMOTENC(categorical_features=["color"], random_state=0).fit_resample(df, y)
    df["num"] = pd.array(np.where(np.arange(len(y)) == 5, None, 1.5), dtype="Float64")
    with pytest.raises(ValueError, match="continuous column 'num' has a missing.*row 5"):
        eov.SMOTENC(categorical_features=["color", "city"], random_state=0).fit_resample(df, y)


def test_smoten_frames():
    iov = pytest.importorskip("imblearn.over_sampling")
    df, y = _mixed()
    dn = df[["color", "city", "flag"]]
    Xr, yr = eov.SMOTEN(random_state=0).fit_resample(dn, y)
    _check_synthetic(dn, y, Xr, yr, ["color", "city", "flag"])
    _, y_ref = iov.SMOTEN(random_state=0).fit_resample(df[["color", "city"]], y)
    assert np.array_equal(np.bincount(yr), np.bincount(y_ref))
    # string dtype with pandas.NA, object with None: missing values are a category
    d2 = dn.copy()
    d2["city"] = d2["city"].astype("string").where(y == 0, pd.NA)
    d2["obj"] = np.where(y == 1, None, "k")  # an object array (positional, not aligned)
    X2, _ = eov.SMOTEN(random_state=0).fit_resample(d2, y)
    assert list(X2.dtypes) == list(d2.dtypes)
    assert X2["city"].iloc[len(df):].isna().all()
    assert X2["obj"].iloc[len(df):].map(lambda v: v is None).all()


def _int_frames():
    rng = np.random.RandomState(1)
    y = np.array([0] * 24 + [1] * 6)
    a = rng.normal(size=30)
    b = rng.randint(0, 10, 30)
    plain = pd.DataFrame({"a": a, "b": b.astype(np.int64)})
    nullable = pd.DataFrame({"a": a, "b": pd.array(b, dtype="Int64")})
    floats = pd.DataFrame({"a": a, "b": b.astype(np.float64)})
    return plain, nullable, floats, y


def test_nullable_int64_column_truncates_like_int64():
    """A nullable Int64 column comes back as Int64 with the plain int64 column's values:
    the synthetic float value truncated toward zero (numpy astype / imbalanced-learn)."""
    plain, nullable, floats, y = _int_frames()
    Xp, yp = eov.SMOTE(random_state=0).fit_resample(plain, y)
    Xn, yn = eov.SMOTE(random_state=0).fit_resample(nullable, y)
    Xf, _ = eov.SMOTE(random_state=0).fit_resample(floats, y)
    assert Xn.shape == Xp.shape == (48, 2)
    assert str(Xn["b"].dtype) == "Int64" and Xp["b"].dtype == np.int64
    np.testing.assert_array_equal(yn, yp)
    np.testing.assert_array_equal(Xn["a"].to_numpy(), Xp["a"].to_numpy())
    want = np.trunc(Xf["b"].to_numpy()).astype(np.int64)
    assert not np.array_equal(Xf["b"].to_numpy()[30:], want[30:])  # some synthetic b fractional
    np.testing.assert_array_equal(Xp["b"].to_numpy(), want)
    np.testing.assert_array_equal(Xn["b"].to_numpy(dtype=np.int64), want)
    np.testing.assert_array_equal(Xn["b"].to_numpy(dtype=np.int64)[:30], plain["b"].to_numpy())
    assert not Xn["b"].isna().any()
    # SMOTENC's continuous columns follow the same rule
    cat = pd.Series(np.where(np.arange(30) % 2 == 0, "u", "v"))
    Xc, _ = eov.SMOTENC(categorical_features=["c"], random_state=0).fit_resample(
        nullable.assign(c=cat), y)
    Xcp, _ = eov.SMOTENC(categorical_features=["c"], random_state=0).fit_resample(
        plain.assign(c=cat), y)
    assert str(Xc["b"].dtype) == "Int64"
    np.testing.assert_array_equal(Xc["b"].to_numpy(dtype=np.int64), Xcp["b"].to_numpy())


def test_nullable_int64_with_na_is_refused_by_name():
    from effml.errors import InvalidArgumentError
    _, nullable, _, y = _int_frames()
    nullable.loc[3, "b"] = pd.NA
    with pytest.raises(InvalidArgumentError) as ei:
        eov.SMOTE(random_state=0).fit_resample(nullable, y)
    assert str(ei.value) == (
        "SMOTE.fit_resample: X column 'b' (Int64) holds a missing value (pd.NA) at row 3; "
        "this sampler computes on X and needs complete data: fill or drop the missing values "
        "first")
