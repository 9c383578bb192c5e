"""Drop-in replacements for ``imblearn.over_sampling`` (libeffml's C samplers).

Change ``from imblearn.over_sampling import SMOTE`` to
``from effml.over_sampling import SMOTE``: class names, parameter names and
defaults are imbalanced-learn 0.14's, and 0.10's deprecated ``n_jobs`` is
accepted as the number of threads of libeffml's neighbour search.

What is the same as imbalanced-learn: class counts for every
``sampling_strategy`` (str, float, dict, callable), output order (the
original rows first, then one synthetic block per class in ascending label
order), the neighbour sets, and the geometry (every synthetic row lies on the
segment between a minority row and one of its k nearest same-class
neighbours).  What differs: random numbers come from libeffml's generator
(xoshiro256**), so synthetic rows are not bit-identical to imblearn's for the
same ``random_state``; the same seed gives the same rows for any thread
count.  ``sampling_strategy`` with a float rounds robustly where imblearn
0.10 truncates (imblearn #1215), which can differ by one sample.
Neighbours are exact Euclidean; ``k_neighbors`` given as an object (e.g.
``NearestNeighbors(n_neighbors=6)``) contributes its k only.

References: SMOTE, Chawla et al., JAIR 16 (2002), arXiv:1106.1813;
Borderline-SMOTE, Han, Wang & Mao, ICIC 2005; ADASYN, He et al., IJCNN
2008; SMOTE-NC, Chawla et al. 2002 §6.1.
"""

import numpy as np

from ._errors import InvalidArgumentError, UnsupportedError
from ._sampler_base import (RESAMPLE_ADASYN, RESAMPLE_BORDERLINE1, RESAMPLE_BORDERLINE2,
                            RESAMPLE_KMEANS_SMOTE, RESAMPLE_RANDOM_OVER, RESAMPLE_SMOTE,
                            RESAMPLE_SMOTEN, RESAMPLE_SMOTENC, RESAMPLE_SVMSMOTE,
                            BaseSampler, _cast_column, _check_X_y, _Labels, _wrap_like,
                            neighbors_k)
from ._core import thread_context

__all__ = ["SMOTE", "BorderlineSMOTE", "ADASYN", "SMOTENC", "RandomOverSampler", "SVMSMOTE",
           "KMeansSMOTE", "SMOTEN"]


def _is_missing(v):
    """None, NaN, NaT or pandas.NA (pandas is not needed)."""
    if v is None:
        return True
    try:
        return bool(v != v)
    except TypeError:  # pandas.NA: its comparisons are NA, whose bool() raises
        return True


def _sort_key(v):
    return (type(v).__name__, v)


def _encode_categories(values, name):
    """One categorical column -> (categories, codes 0..C-1 as int64).

    Categories are the distinct values in sorted order (as imbalanced-learn's
    one-hot encoder orders them, so ties in the neighbours' vote resolve the
    same way); values of different types (ints and strings in one object
    column) are sorted by type name first.  Missing values (None, NaN, NaT,
    pandas.NA) form one category of their own, last, decoded back to the
    first missing value met in the column (as scikit-learn's one-hot encoder
    treats them as a category).  Unhashable values raise InvalidArgumentError
    naming the column.
    """
    a = np.asarray(values)
    if a.dtype.kind in "biuUS" or (a.dtype.kind == "f" and not np.isnan(a).any()):
        return np.unique(a, return_inverse=True)
    if a.dtype.kind == "f":  # float column with NaN
        miss = np.isnan(a)
        u, inv = np.unique(a[~miss], return_inverse=True)
        codes = np.full(a.shape[0], len(u), dtype=np.int64)
        codes[~miss] = inv
        return np.append(u, np.nan), codes
    vals = a.tolist()
    missing = None
    present = set()
    try:
        for v in vals:
            if _is_missing(v):
                if missing is None:
                    missing = [v]
            else:
                present.add(v)
    except TypeError:
        raise InvalidArgumentError("categorical column %s holds unhashable values (e.g. lists)"
                                   % name) from None
    try:
        cats = sorted(present)
    except TypeError:  # mixed types
        cats = sorted(present, key=_sort_key)
    index = {v: i for i, v in enumerate(cats)}
    m = len(cats)
    codes = np.fromiter((m if _is_missing(v) else index[v] for v in vals), dtype=np.int64,
                        count=len(vals))
    out = np.empty(m + (missing is not None), dtype=object)
    out[:m] = cats
    if missing is not None:
        out[m] = missing[0]
    return out, codes


class SMOTE(BaseSampler):
    """SMOTE: synthetic rows on segments between a minority row and a neighbour.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
        imbalanced-learn's meaning: 'auto' = 'not majority'; a float is the
        wanted minority/majority ratio (binary only); a dict gives the final
        count per class; a callable takes y and returns such a dict.
    random_state : int, RandomState instance or None, default=None
        Seed of libeffml's generator (None: drawn from numpy's global one).
    k_neighbors : int or object with ``n_neighbors``, default=5
        Same-class neighbours each synthetic row may interpolate towards.
    n_jobs : int or None, default=None
        Threads of the neighbour search (imblearn 0.10's deprecated
        parameter, kept as the thread count): None = 1, -1 = all CPUs.

    Attributes
    ----------
    sampling_strategy_ : OrderedDict
        Class -> number of rows generated.

    Raises InvalidArgumentError (a ValueError) when a class has no more than
    k_neighbors rows, NumericError (a ValueError) on NaN/inf in X.
    """

    _method = RESAMPLE_SMOTE

    def __init__(self, *, sampling_strategy="auto", random_state=None, k_neighbors=5,
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.k_neighbors = neighbors_k(self.k_neighbors, "k_neighbors")


class BorderlineSMOTE(BaseSampler):
    """Borderline-SMOTE 1 and 2: SMOTE from the minority rows in danger.

    A minority row is "in danger" when at least half but not all of its
    ``m_neighbors`` nearest rows (any class) belong to other classes; only
    those rows seed synthetic ones.  'borderline-1' interpolates towards
    same-class neighbours, 'borderline-2' also towards other-class ones
    (with a step below 0.5).  A class without rows in danger is left as is.

    Parameters
    ----------
    sampling_strategy, random_state, n_jobs : as :class:`SMOTE`.
    k_neighbors : int or object with ``n_neighbors``, default=5
    m_neighbors : int or object with ``n_neighbors``, default=10
    kind : {'borderline-1', 'borderline-2'}, default='borderline-1'
    """

    _method = RESAMPLE_BORDERLINE1

    def __init__(self, *, sampling_strategy="auto", random_state=None, k_neighbors=5,
                 n_jobs=None, m_neighbors=10, kind="borderline-1"):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.n_jobs = n_jobs
        self.m_neighbors = m_neighbors
        self.kind = kind

    def _set_options(self, opt, n_features):
        if self.kind == "borderline-1":
            opt.method = RESAMPLE_BORDERLINE1
        elif self.kind == "borderline-2":
            opt.method = RESAMPLE_BORDERLINE2
        else:
            raise InvalidArgumentError(
                "kind must be 'borderline-1' or 'borderline-2', got %r" % (self.kind,))
        opt.k_neighbors = neighbors_k(self.k_neighbors, "k_neighbors")
        opt.m_neighbors = neighbors_k(self.m_neighbors, "m_neighbors")


class ADASYN(BaseSampler):
    """ADASYN: more synthetic rows where the minority class is harder to learn.

    Row i of a targeted class seeds round(r_i * G) synthetic rows, r_i the
    normalised fraction of other-class rows among its ``n_neighbors`` nearest
    neighbours, G the number the strategy asks for (so the final counts are
    close to, not exactly, balanced: as the paper and imblearn).

    Parameters
    ----------
    sampling_strategy, random_state, n_jobs : as :class:`SMOTE`.
    n_neighbors : int or object with ``n_neighbors``, default=5
    """

    _method = RESAMPLE_ADASYN

    def __init__(self, *, sampling_strategy="auto", random_state=None, n_neighbors=5,
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.k_neighbors = neighbors_k(self.n_neighbors, "n_neighbors")


class RandomOverSampler(BaseSampler):
    """Random over-sampling: bootstrap copies of rows of the targeted classes.

    X may be any array (strings, mixed DataFrames, scipy sparse): rows are
    only copied.  ``sample_indices_`` lists the input row of every output row.

    Parameters
    ----------
    sampling_strategy, random_state : as :class:`SMOTE`.
    shrinkage : None
        Smoothed bootstrap is not implemented: anything but None raises
        UnsupportedError (rather than silently returning plain copies).
    """

    _method = RESAMPLE_RANDOM_OVER
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", random_state=None, shrinkage=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.shrinkage = shrinkage

    def _set_options(self, opt, n_features):
        if self.shrinkage is not None:
            raise UnsupportedError("RandomOverSampler(shrinkage=%r): smoothed bootstrap is "
                                   "not implemented; use shrinkage=None" % (self.shrinkage,))


class SMOTENC(BaseSampler):
    """SMOTE-NC: SMOTE for data with categorical columns (imblearn 0.12+ semantics).

    Continuous columns are interpolated as in SMOTE; each categorical column
    takes the most frequent category among the base row's k neighbours.
    Neighbours are found with categories one-hot encoded and scaled by the
    median of the class's continuous standard deviations.

    Parameters
    ----------
    categorical_features : array of indices, boolean mask, column names or 'auto'
        Which columns are categorical ('auto': the DataFrame's ``category``
        and ``object`` columns).  Categories may be any values (strings too).
    categorical_encoder : None
        Only the built-in encoding is implemented; anything but None raises
        UnsupportedError.
    sampling_strategy, random_state, k_neighbors, n_jobs : as :class:`SMOTE`.
    """

    _method = RESAMPLE_SMOTENC

    def __init__(self, categorical_features, *, categorical_encoder=None,
                 sampling_strategy="auto", random_state=None, k_neighbors=5, n_jobs=None):
        self.categorical_features = categorical_features
        self.categorical_encoder = categorical_encoder
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.n_jobs = n_jobs

    def _categorical_indices(self, X):
        cf = self.categorical_features
        n_features = X.shape[1]
        if isinstance(cf, str) and cf == "auto":
            if not hasattr(X, "dtypes"):
                raise InvalidArgumentError(
                    "categorical_features='auto' needs a pandas DataFrame")
            idx = [i for i, dt in enumerate(X.dtypes)
                   if str(dt) == "category" or dt == object]
        else:
            a = np.asarray(cf)
            if a.dtype == bool:
                if a.shape != (n_features,):
                    raise InvalidArgumentError(
                        "categorical_features mask has %d entries, X has %d columns"
                        % (a.size, n_features))
                idx = np.flatnonzero(a).tolist()
            elif a.dtype.kind in "OUS":
                if not hasattr(X, "columns"):
                    raise InvalidArgumentError(
                        "categorical_features as column names needs a pandas DataFrame")
                cols = list(X.columns)
                idx = []
                for name in a.tolist():
                    if name not in cols:
                        raise InvalidArgumentError("categorical feature %r is not a column"
                                                   % (name,))
                    idx.append(cols.index(name))
            else:
                idx = [int(i) + (n_features if int(i) < 0 else 0) for i in a.ravel().tolist()]
        return idx

    def fit_resample(self, X, y):
        """Resample; categorical columns keep their values (and dtypes in a DataFrame)."""
        if self.categorical_encoder is not None:
            raise UnsupportedError("SMOTENC(categorical_encoder=...) is not implemented; "
                                   "the built-in one-hot encoding is always used")
        ya = _check_X_y(X, y)
        if not hasattr(X, "shape") or len(X.shape) != 2:
            X = np.asarray(X)
        cat = self._categorical_indices(X)
        self._cat = cat
        n_features = X.shape[1]
        # Encode categorical columns as codes 0..C-1, continuous as float64.
        frame = hasattr(X, "iloc")
        Xa = None if frame else np.asarray(X)
        names = list(X.columns) if frame else list(range(n_features))
        enc = np.empty((len(ya), n_features), dtype=np.float64)
        cats = {}
        for j in range(n_features):
            col = X.iloc[:, j] if frame else Xa[:, j]
            if j in cat:
                cats[j], enc[:, j] = _encode_categories(
                    col.to_numpy() if frame else col, "%r" % (names[j],))
            else:
                try:
                    if frame:  # nullable (Int64, Float64) columns: pd.NA -> NaN
                        enc[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
                    else:
                        enc[:, j] = col
                except (TypeError, ValueError):
                    raise InvalidArgumentError(
                        "column %r (%s) is not numeric; list it in categorical_features"
                        % (names[j], col.dtype)) from None
                bad = ~np.isfinite(enc[:, j])
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise InvalidArgumentError(
                        "continuous column %r has a missing or non-finite value (%r) at row %d; "
                        "SMOTENC interpolates continuous columns: fill or drop it, or list the "
                        "column in categorical_features" % (names[j], enc[i, j], i))
        labels = _Labels(ya)
        ctx = thread_context(self._threads())
        self._cat_arr = np.array(sorted(set(cat)), dtype=np.int64)
        opt, keep = self._resolve(labels, enc, fit_only=False)
        xr, yr = self._generate(ctx, opt, enc, labels)
        # Decode.
        if hasattr(X, "iloc"):
            import pandas as pd
            data = {}
            for j, name in enumerate(X.columns):
                col = xr[:, j]
                if j in cats:
                    col = cats[j][col.astype(np.int64)]
                else:  # continuous: the samplers' one rule (ints truncate, Int64 too)
                    col = _cast_column(col, X.dtypes.iloc[j])
                data[name] = col
            out = pd.DataFrame(data, columns=X.columns).astype(X.dtypes)
        else:
            Xa = np.asarray(X)
            if cats and Xa.dtype.kind not in "fiu":
                out = np.empty(xr.shape, dtype=object)
                for j in range(n_features):
                    out[:, j] = cats[j][xr[:, j].astype(np.int64)] if j in cats else xr[:, j]
            else:
                out = xr
                for j, u in cats.items():
                    out[:, j] = u[xr[:, j].astype(np.int64)]
        return out, _wrap_like(y, yr)

    def _set_options(self, opt, n_features):
        import ctypes
        opt.k_neighbors = neighbors_k(self.k_neighbors, "k_neighbors")
        cat = getattr(self, "_cat_arr", None)
        if cat is None:
            raise InvalidArgumentError("SMOTENC: call fit_resample (categorical columns unknown)")
        opt.n_categorical = len(cat)
        opt.categorical_features = cat.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))

    def fit(self, X, y):
        """Check the inputs and compute ``sampling_strategy_``; return self."""
        ya = _check_X_y(X, y)
        self._cat_arr = np.array(sorted(set(self._categorical_indices(
            X if hasattr(X, "shape") else np.asarray(X)))), dtype=np.int64)
        self._resolve(_Labels(ya), np.zeros((len(ya), 2)), fit_only=True)
        return self


class SVMSMOTE(BaseSampler):
    """SVM-SMOTE (Nguyen, Cooper & Kamei, IJKESDP 3(1), 2011).

    An SVM (``svm_estimator``, default scikit-learn ``SVC()``, as imblearn) is
    fitted on X, y; its support vectors of each targeted class that are not
    noise (all ``m_neighbors`` neighbours of other classes) seed new rows:
    danger vectors interpolate toward a class neighbour, safe ones extrapolate
    away by up to ``out_step``.  When one group is empty the other makes all
    rows (imblearn makes fewer than asked).
    """

    _method = RESAMPLE_SVMSMOTE

    def __init__(self, *, sampling_strategy="auto", random_state=None, k_neighbors=5,
                 n_jobs=None, m_neighbors=10, svm_estimator=None, out_step=0.5):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.n_jobs = n_jobs
        self.m_neighbors = m_neighbors
        self.svm_estimator = svm_estimator
        self.out_step = out_step

    def fit_resample(self, X, y):
        from sklearn.base import clone
        from sklearn.svm import SVC
        svm = SVC(gamma="scale") if self.svm_estimator is None else clone(self.svm_estimator)
        svm.fit(self._x_float(X), np.asarray(y))
        if not hasattr(svm, "support_"):
            raise InvalidArgumentError("svm_estimator must expose support_ (an SVM)")
        self._support = np.ascontiguousarray(svm.support_, dtype=np.int64)
        try:
            return super().fit_resample(X, y)
        finally:
            self._support = None

    def _set_options(self, opt, n_features):
        import ctypes
        opt.k_neighbors = neighbors_k(self.k_neighbors, "k_neighbors")
        opt.m_neighbors = neighbors_k(self.m_neighbors, "m_neighbors")
        opt.out_step = float(self.out_step)
        sv = getattr(self, "_support", None)
        if sv is not None:
            opt.n_support = len(sv)
            opt.support_indices = sv.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))


class KMeansSMOTE(BaseSampler):
    """KMeans-SMOTE (Douzas, Bacao & Last, Information Sciences 465, 2018).

    k-means over all rows (``kmeans_estimator``: None = 8 clusters, an int, or
    a scikit-learn (MiniBatch)KMeans whose n_clusters is used); SMOTE inside
    the clusters where the class is frequent enough, more rows where its rows
    are sparser.  ``density_exponent='auto'`` uses the number of features (the
    paper; imblearn's code uses the cluster size).
    """

    _method = RESAMPLE_KMEANS_SMOTE

    def __init__(self, *, sampling_strategy="auto", random_state=None, k_neighbors=2,
                 n_jobs=None, kmeans_estimator=None, cluster_balance_threshold="auto",
                 density_exponent="auto"):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.n_jobs = n_jobs
        self.kmeans_estimator = kmeans_estimator
        self.cluster_balance_threshold = cluster_balance_threshold
        self.density_exponent = density_exponent

    def _set_options(self, opt, n_features):
        opt.k_neighbors = neighbors_k(self.k_neighbors, "k_neighbors")
        km = self.kmeans_estimator
        if km is None:
            opt.n_clusters = 8
        elif isinstance(km, int):
            opt.n_clusters = km
        elif hasattr(km, "n_clusters"):
            opt.n_clusters = int(km.n_clusters)
        else:
            raise UnsupportedError("kmeans_estimator=%r: give None, an int or a KMeans" % (km,))
        cbt, de = self.cluster_balance_threshold, self.density_exponent
        opt.cluster_balance_threshold = float("nan") if cbt == "auto" else float(cbt)
        opt.density_exponent = float("nan") if de == "auto" else float(de)


class SMOTEN(BaseSampler):
    """SMOTEN: SMOTE for nominal features (Chawla et al., JAIR 2002, SMOTE-N).

    Every column is categorical (any values, strings too).  Neighbours use the
    value difference metric (each value embedded as its class-probability
    vector); a new row takes per column the most frequent value of a random
    class row and its ``k_neighbors`` neighbours.
    """

    _method = RESAMPLE_SMOTEN

    def __init__(self, categorical_encoder=None, *, sampling_strategy="auto",
                 random_state=None, k_neighbors=5, n_jobs=None):
        self.categorical_encoder = categorical_encoder
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.k_neighbors = k_neighbors
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        if self.categorical_encoder is not None:
            raise UnsupportedError("SMOTEN(categorical_encoder=...) is not supported")
        opt.k_neighbors = neighbors_k(self.k_neighbors, "k_neighbors")

    def _x_float(self, X):
        xa = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
        if xa.ndim != 2:
            raise InvalidArgumentError("X must be 2-D")
        names = list(X.columns) if hasattr(X, "columns") else list(range(xa.shape[1]))
        codes = np.empty(xa.shape, dtype=np.float64)
        self._cats = []
        for j in range(xa.shape[1]):
            u, codes[:, j] = _encode_categories(xa[:, j], "%r" % (names[j],))
            self._cats.append(u)
        return codes

    def _generate(self, ctx, opt, X, labels):
        xr, yr = super()._generate(ctx, opt, X, labels)
        xa = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
        out = np.empty(xr.shape, dtype=xa.dtype)
        for j, u in enumerate(self._cats):
            out[:, j] = u[xr[:, j].astype(np.int64)]
        return out, yr
