"""Drop-in replacements for ``imblearn.under_sampling`` (libeffml's C samplers).

``RandomUnderSampler``, ``TomekLinks`` and ``EditedNearestNeighbours`` with
imbalanced-learn 0.14's names, parameters and defaults (``n_jobs`` = threads
of libeffml's neighbour search).  They only select rows, so X may be any
array the sampler can index (the random sampler looks at y only: strings,
mixed DataFrames and scipy sparse work; Tomek links and ENN need numeric X
for their Euclidean neighbours) and ``sample_indices_`` gives the kept
rows.  Tomek links and ENN are deterministic: they select exactly the rows
imblearn selects (ties in distance are broken by the lower row index).
Output order is imblearn's: random under-sampling and ENN group rows by class
in label order (random order within a targeted class, original order
otherwise); Tomek links keep the original order.

References: Tomek, "Two modifications of CNN", IEEE Trans. SMC 6 (1976);
Wilson, "Asymptotic properties of nearest neighbor rules using edited
data", IEEE Trans. SMC 2 (1972).
"""

from ._errors import UnsupportedError, InvalidArgumentError
from ._core import c_int
from ._sampler_base import (PROBA_FN, RESAMPLE_ALLKNN, RESAMPLE_CLUSTER_CENTROIDS, RESAMPLE_CNN,
                            RESAMPLE_ENN, RESAMPLE_IHT, RESAMPLE_NCL, RESAMPLE_NEARMISS,
                            RESAMPLE_OSS,
                            RESAMPLE_RANDOM_UNDER, RESAMPLE_RENN, RESAMPLE_TOMEK, BaseSampler,
                            neighbors_k)

__all__ = ["RandomUnderSampler", "TomekLinks", "EditedNearestNeighbours", "NearMiss",
           "RepeatedEditedNearestNeighbours", "AllKNN", "NeighbourhoodCleaningRule",
           "CondensedNearestNeighbour", "OneSidedSelection", "ClusterCentroids",
           "InstanceHardnessThreshold"]


def _kind_sel(value):
    if value == "all":
        return 0
    if value == "mode":
        return 1
    raise InvalidArgumentError("kind_sel must be 'all' or 'mode', got %r" % (value,))


class RandomUnderSampler(BaseSampler):
    """Random under-sampling of the targeted classes (without replacement).

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
        'auto' = 'not minority'; a float is the wanted minority/majority
        ratio after resampling (binary only); a dict gives the number of rows
        kept per class.
    random_state : int, RandomState instance or None, default=None
    replacement : False
        Drawing with replacement is not implemented: True raises
        UnsupportedError.

    Attributes: ``sampling_strategy_`` (class -> rows kept),
    ``sample_indices_`` (the kept input rows, in output order).
    """

    _method = RESAMPLE_RANDOM_UNDER
    _sampling_type = "under-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", random_state=None, replacement=False):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.replacement = replacement

    def _set_options(self, opt, n_features):
        if self.replacement:
            raise UnsupportedError("RandomUnderSampler(replacement=True) is not implemented")


class TomekLinks(BaseSampler):
    """Remove Tomek links: pairs of rows of different classes that are each
    other's nearest neighbour.  With 'auto' only the majority-side member of
    each link is removed ('not minority' classes).

    Parameters
    ----------
    sampling_strategy : str or list, default='auto'
        Classes that may lose rows.
    n_jobs : int or None, default=None
        Threads of the neighbour search.

    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_TOMEK
    _sampling_type = "clean-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.n_jobs = n_jobs


class EditedNearestNeighbours(BaseSampler):
    """Edited nearest neighbours: remove rows of the targeted classes that
    their ``n_neighbors`` nearest neighbours disagree with.

    Parameters
    ----------
    sampling_strategy : str or list, default='auto'
    n_neighbors : int or object with ``n_neighbors``, default=3
    kind_sel : {'all', 'mode'}, default='all'
        'all': keep a row iff all its neighbours share its class; 'mode':
        keep it iff their most common class is its class.
    n_jobs : int or None, default=None

    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_ENN
    _sampling_type = "clean-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", n_neighbors=3, kind_sel="all",
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.n_neighbors = n_neighbors
        self.kind_sel = kind_sel
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.n_neighbors = neighbors_k(self.n_neighbors, "n_neighbors")
        opt.kind_sel = _kind_sel(self.kind_sel)


class NearMiss(BaseSampler):
    """NearMiss-1/2/3 under-sampling (Mani & Zhang, ICML 2003 workshop).

    Each targeted class keeps the rows closest to the minority class:
    version 1, smallest mean distance to their ``n_neighbors`` nearest
    minority rows; 2, to their ``min(n_neighbors, n_minority)`` farthest (any
    ``n_neighbors >= 1``, as imblearn); 3, among the union of each minority
    row's ``n_neighbors_ver3`` nearest rows of the class, the largest mean
    distance to their nearest minority rows (may keep fewer than asked, as
    imblearn).  Kept rows are in score order, as imblearn.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
    version : {1, 2, 3}, default=1
    n_neighbors : int or object with ``n_neighbors``, default=3
    n_neighbors_ver3 : int or object with ``n_neighbors``, default=3
    n_jobs : int or None, default=None

    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_NEARMISS
    _sampling_type = "under-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", version=1, n_neighbors=3,
                 n_neighbors_ver3=3, n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.version = version
        self.n_neighbors = n_neighbors
        self.n_neighbors_ver3 = n_neighbors_ver3
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        if self.version not in (1, 2, 3):
            raise InvalidArgumentError("version must be 1, 2 or 3, got %r" % (self.version,))
        opt.version = c_int(self.version, "version", "int32")
        # NearMiss queries other classes' rows against the minority: no self to skip
        opt.n_neighbors = neighbors_k(self.n_neighbors, "n_neighbors", extra=0)
        opt.n_neighbors_ver3 = neighbors_k(self.n_neighbors_ver3, "n_neighbors_ver3", extra=0)


class RepeatedEditedNearestNeighbours(BaseSampler):
    """Repeated ENN (Tomek 1976): ENN passes until one removes nothing, a
    class would fall below the minority's size or vanish, or ``max_iter``.

    Parameters: sampling_strategy, n_neighbors, kind_sel, n_jobs as
    :class:`EditedNearestNeighbours`; max_iter (default 100).
    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_RENN
    _sampling_type = "clean-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", n_neighbors=3, max_iter=100,
                 kind_sel="all", n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.n_neighbors = n_neighbors
        self.max_iter = max_iter
        self.kind_sel = kind_sel
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.n_neighbors = neighbors_k(self.n_neighbors, "n_neighbors")
        opt.kind_sel = _kind_sel(self.kind_sel)
        opt.max_iter = c_int(self.max_iter, "max_iter")


class AllKNN(BaseSampler):
    """AllKNN (Tomek 1976): ENN passes with k = 1 .. ``n_neighbors``.

    Stops when a class vanishes or (unless ``allow_minority``) falls below
    the minority's size.  Parameters as :class:`EditedNearestNeighbours` plus
    allow_minority (default False).
    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_ALLKNN
    _sampling_type = "clean-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", n_neighbors=3, kind_sel="all",
                 allow_minority=False, n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.n_neighbors = n_neighbors
        self.kind_sel = kind_sel
        self.allow_minority = allow_minority
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.n_neighbors = neighbors_k(self.n_neighbors, "n_neighbors")
        opt.kind_sel = _kind_sel(self.kind_sel)
        opt.allow_minority = 1 if self.allow_minority else 0


class NeighbourhoodCleaningRule(BaseSampler):
    """Neighbourhood cleaning rule (Laurikkala, AIME 2001).

    Removes the rows a majority-vote ENN removes, and the neighbours of
    every minority row that its ``n_neighbors`` neighbours misclassify, in
    targeted classes with at least ``threshold_cleaning`` x |minority| rows
    (the paper's rule; imbalanced-learn 0.10 compares with
    threshold_cleaning x n_samples, so it may clean fewer classes).
    Kept rows in original order.

    Parameters
    ----------
    sampling_strategy, n_neighbors, kind_sel, n_jobs : as :class:`EditedNearestNeighbours`
    threshold_cleaning : float, default=0.5
    edited_nearest_neighbours : None
        imblearn 0.12+'s custom ENN object is not supported (UnsupportedError).
    """

    _method = RESAMPLE_NCL
    _sampling_type = "clean-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", edited_nearest_neighbours=None,
                 n_neighbors=3, kind_sel="all", threshold_cleaning=0.5, n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.edited_nearest_neighbours = edited_nearest_neighbours
        self.n_neighbors = n_neighbors
        self.kind_sel = kind_sel
        self.threshold_cleaning = threshold_cleaning
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        if self.edited_nearest_neighbours is not None:
            raise UnsupportedError("NeighbourhoodCleaningRule(edited_nearest_neighbours=...) is "
                                   "not supported; use n_neighbors and kind_sel")
        opt.n_neighbors = neighbors_k(self.n_neighbors, "n_neighbors")
        opt.kind_sel = _kind_sel(self.kind_sel)
        opt.threshold_cleaning = float(self.threshold_cleaning)


class _CnnBase(BaseSampler):
    _sampling_type = "clean-sampling"
    _by_index = True

    def __init__(self, *, sampling_strategy="auto", random_state=None, n_neighbors=None,
                 n_seeds_S=1, n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.n_seeds_S = n_seeds_S
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        # n_neighbors is the k of a kNN classifier fitted on the kept set: no self to skip
        opt.n_neighbors = 0 if self.n_neighbors is None else \
            neighbors_k(self.n_neighbors, "n_neighbors", extra=0)
        if c_int(self.n_seeds_S, "n_seeds_S") < 1:
            raise InvalidArgumentError("n_seeds_S must be >= 1, got %r" % (self.n_seeds_S,))
        opt.n_seeds_S = int(self.n_seeds_S)


class CondensedNearestNeighbour(_CnnBase):
    """Condensed nearest neighbour (Hart, IEEE Trans. Inf. Theory 1968).

    Per targeted class, the kept set starts as the minority rows plus
    ``n_seeds_S`` random rows of the class; rows the ``n_neighbors``-NN vote
    over the kept set misclassifies join it, in passes until one adds
    nothing (Hart's rule: every row of the class is then classified
    correctly; imbalanced-learn 0.10 stops after one pass, and draws its
    seeds with replacement).

    Parameters
    ----------
    sampling_strategy : str or list, default='auto'
    random_state : int, RandomState instance or None
    n_neighbors : None (1), int or object with ``n_neighbors``
    n_seeds_S : int, default=1
    n_jobs : int or None

    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_CNN


class OneSidedSelection(_CnnBase):
    """One-sided selection (Kubat & Matwin, ICML 1997).

    Per targeted class: ``n_seeds_S`` random seeds plus the rows their
    ``n_neighbors``-NN vote misclassifies, then Tomek links touching a
    targeted class removed until none is left (imbalanced-learn 0.10 removes
    one round).  Parameters as :class:`CondensedNearestNeighbour`.
    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_OSS


class ClusterCentroids(BaseSampler):
    """Under-sampling by k-means centroids of each targeted class (imblearn ``ClusterCentroids``).

    Each targeted class is replaced by the centroids of a k-means with as
    many clusters as rows to keep (libeffml's k-means: ``kmeans_n_init``
    restarts, best inertia, as scikit-learn 1.2's KMeans defaults).
    voting 'soft' (and 'auto' for dense X) returns the centroids; 'hard' the
    class row nearest to each centroid.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
    random_state : int, RandomState instance or None
    estimator : None or a scikit-learn KMeans (its n_init, max_iter, tol are used;
        any other estimator raises UnsupportedError)
    voting : {'auto', 'soft', 'hard'}, default='auto'
    """

    _method = RESAMPLE_CLUSTER_CENTROIDS
    _sampling_type = "under-sampling"

    def __init__(self, *, sampling_strategy="auto", random_state=None, estimator=None,
                 voting="auto"):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.estimator = estimator
        self.voting = voting

    def _set_options(self, opt, n_features):
        if self.voting not in ("auto", "soft", "hard"):
            raise InvalidArgumentError("voting must be 'auto', 'soft' or 'hard', got %r"
                                       % (self.voting,))
        opt.voting = 1 if self.voting == "hard" else 0
        est = self.estimator
        if est is not None:
            if type(est).__name__ != "KMeans":
                raise UnsupportedError("ClusterCentroids(estimator=%s): only KMeans parameters "
                                       "are supported (libeffml's own k-means)"
                                       % type(est).__name__)
            n_init = getattr(est, "n_init", 10)
            opt.kmeans_n_init = 10 if n_init in ("auto", "warn") else int(n_init)
            opt.kmeans_max_iter = int(getattr(est, "max_iter", 300))
            opt.kmeans_tol = float(getattr(est, "tol", 1e-4))


class InstanceHardnessThreshold(BaseSampler):
    """Instance hardness threshold (Smith, Martinez & Giraud-Carrier, Machine Learning 2014).

    A classifier's cross-validated probability of each row's own class
    measures how easy the row is; each targeted class keeps its easiest rows
    (imblearn ``InstanceHardnessThreshold``).  The folds are libeffml's
    stratified split; the classifier is any scikit-learn estimator with
    ``predict_proba`` (default: RandomForestClassifier(n_estimators=100), as
    imblearn), fitted from Python once per fold through a callback.  An
    exception in the estimator stops the C call and is re-raised.

    Parameters
    ----------
    estimator : None or a classifier with fit/predict_proba (cloned per fold)
    sampling_strategy : float, str, dict or callable, default='auto'
    random_state : int, RandomState instance or None
    cv : int, default=5 (stratified folds)
    n_jobs : passed to the default random forest

    Attributes: ``sampling_strategy_``, ``sample_indices_``.
    """

    _method = RESAMPLE_IHT
    _sampling_type = "under-sampling"
    _by_index = True

    def __init__(self, *, estimator=None, sampling_strategy="auto", random_state=None, cv=5,
                 n_jobs=None):
        self.estimator = estimator
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.cv = cv
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        import numpy as np
        from sklearn.base import clone
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2:
            raise InvalidArgumentError("cv must be an int >= 2 (folds), got %r" % (self.cv,))
        opt.cv = c_int(self.cv, "cv")
        if self.estimator is None:
            from sklearn.ensemble import RandomForestClassifier
            rs = self.random_state if isinstance(self.random_state, int) else None
            base = RandomForestClassifier(n_estimators=100, random_state=rs, n_jobs=self.n_jobs)
        else:
            if not hasattr(self.estimator, "predict_proba"):
                raise InvalidArgumentError("estimator must have predict_proba")
            base = self.estimator
        self._pending = []

        def proba(_ud, xtr, ytr, ntr, xte, nte, d, classes, ncls, out):
            try:
                Xtr = np.ctypeslib.as_array(xtr, shape=(ntr, d))
                Ytr = np.ctypeslib.as_array(ytr, shape=(ntr,))
                Xte = np.ctypeslib.as_array(xte, shape=(nte, d))
                cls = np.ctypeslib.as_array(classes, shape=(ncls,))
                P = np.ctypeslib.as_array(out, shape=(nte, ncls))
                est = clone(base).fit(Xtr, Ytr)
                p = est.predict_proba(Xte)
                P[:] = 0
                col = np.searchsorted(cls, np.asarray(est.classes_))
                P[:, col] = p
                return 0
            except BaseException as e:  # noqa: B902 - re-raised after the C call
                self._pending.append(e)
                return 1
        self._proba_cb = PROBA_FN(proba)  # kept alive for the call
        opt.proba_fn = self._proba_cb

    def fit_resample(self, X, y):
        """Resample; see the class docstring."""
        try:
            return super().fit_resample(X, y)
        finally:
            self._proba_cb = None
