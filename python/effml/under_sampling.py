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
from ._sampler_base import (RESAMPLE_ENN, RESAMPLE_RANDOM_UNDER, RESAMPLE_TOMEK, BaseSampler,
                            neighbors_k)

__all__ = ["RandomUnderSampler", "TomekLinks", "EditedNearestNeighbours"]


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
        if self.kind_sel == "all":
            opt.kind_sel = 0
        elif self.kind_sel == "mode":
            opt.kind_sel = 1
        else:
            raise InvalidArgumentError("kind_sel must be 'all' or 'mode', got %r"
                                       % (self.kind_sel,))
