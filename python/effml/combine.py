"""Drop-in replacements for ``imblearn.combine``: SMOTE followed by cleaning.

``SMOTEENN`` and ``SMOTETomek`` (Batista, Prati & Monard, SIGKDD
Explorations 6(1), 2004) run in one C call: exactly
:class:`effml.over_sampling.SMOTE` with the same options and seed, then
edited nearest neighbours or Tomek links with ``sampling_strategy='all'`` on
the resampled rows (imbalanced-learn's defaults).  ``smote``, ``enn`` and
``tomek`` may be given as estimators: their neighbour parameters (and
SMOTE's ``sampling_strategy`` and ``random_state``) are used; a cleaning
estimator with another ``sampling_strategy`` than 'all' is refused rather
than silently ignored.
"""

from ._errors import UnsupportedError
from ._sampler_base import RESAMPLE_SMOTEENN, RESAMPLE_SMOTETOMEK, BaseSampler, neighbors_k

__all__ = ["SMOTEENN", "SMOTETomek"]


class _Combine(BaseSampler):
    def _smote_params(self):
        sm = self.smote
        if sm is None:
            return self.sampling_strategy, self.random_state, 5
        return (getattr(sm, "sampling_strategy", "auto"), getattr(sm, "random_state", None),
                getattr(sm, "k_neighbors", 5))

    def _options(self, labels, n_features, keep):
        ss, rs, _ = self._smote_params()
        saved = (self.sampling_strategy, self.random_state)
        self.sampling_strategy, self.random_state = ss, rs
        try:
            return super()._options(labels, n_features, keep)
        finally:
            self.sampling_strategy, self.random_state = saved

    def _set_options(self, opt, n_features):
        opt.k_neighbors = neighbors_k(self._smote_params()[2], "smote.k_neighbors")
        self._set_cleaner(opt)


class SMOTEENN(_Combine):
    """SMOTE, then edited nearest neighbours on every class.

    Parameters
    ----------
    sampling_strategy, random_state : of the SMOTE step (as :class:`effml.over_sampling.SMOTE`)
    smote : None or a SMOTE estimator (its sampling_strategy, random_state, k_neighbors)
    enn : None (ENN with n_neighbors=3, kind_sel='all') or an EditedNearestNeighbours
        with sampling_strategy='all'
    n_jobs : threads of the neighbour searches
    """

    _method = RESAMPLE_SMOTEENN

    def __init__(self, *, sampling_strategy="auto", random_state=None, smote=None, enn=None,
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.smote = smote
        self.enn = enn
        self.n_jobs = n_jobs

    def _set_cleaner(self, opt):
        enn = self.enn
        if enn is None:
            opt.n_neighbors, opt.kind_sel = 3, 0
            return
        if getattr(enn, "sampling_strategy", "all") != "all":
            raise UnsupportedError("SMOTEENN(enn=...) needs sampling_strategy='all' on the ENN")
        opt.n_neighbors = neighbors_k(getattr(enn, "n_neighbors", 3), "enn.n_neighbors")
        kind = getattr(enn, "kind_sel", "all")
        opt.kind_sel = {"all": 0, "mode": 1}.get(kind, -1)
        if opt.kind_sel < 0:
            raise UnsupportedError("enn.kind_sel=%r" % (kind,))


class SMOTETomek(_Combine):
    """SMOTE, then removal of Tomek links between any classes.

    Parameters as :class:`SMOTEENN`, with ``tomek`` None or a TomekLinks
    with sampling_strategy='all'.
    """

    _method = RESAMPLE_SMOTETOMEK

    def __init__(self, *, sampling_strategy="auto", random_state=None, smote=None, tomek=None,
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.smote = smote
        self.tomek = tomek
        self.n_jobs = n_jobs

    def _set_cleaner(self, opt):
        if self.tomek is not None and getattr(self.tomek, "sampling_strategy", "all") != "all":
            raise UnsupportedError("SMOTETomek(tomek=...) needs sampling_strategy='all'")
