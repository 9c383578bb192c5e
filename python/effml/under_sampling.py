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
from ._sampler_base import (RESAMPLE_ALLKNN, RESAMPLE_ENN, RESAMPLE_NCL, RESAMPLE_NEARMISS,
                            RESAMPLE_RANDOM_UNDER, RESAMPLE_RENN, RESAMPLE_TOMEK, BaseSampler,
                            neighbors_k)

__all__ = ["RandomUnderSampler", "TomekLinks", "EditedNearestNeighbours", "NearMiss",
           "RepeatedEditedNearestNeighbours", "AllKNN", "NeighbourhoodCleaningRule"]


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
    minority rows; 2, to their farthest; 3, among the union of each minority
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
        opt.version = int(self.version)
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
        opt.max_iter = int(self.max_iter)


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
