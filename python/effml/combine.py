"""Drop-in replacements for ``imblearn.combine``: SMOTE followed by a cleaning
rule (Batista, Prati & Monard, SIGKDD Explorations 6(1), 2004).

The result equals SMOTE with the same parameters and ``random_state``
followed by ENN / Tomek links with ``sampling_strategy='all'`` on SMOTE's
output (imblearn's defaults), computed in one C call.
"""

from ._errors import UnsupportedError
from ._sampler_base import RESAMPLE_SMOTEENN, RESAMPLE_SMOTETOMEK, BaseSampler, neighbors_k

__all__ = ["SMOTEENN", "SMOTETomek"]


def _smote_k(smote):
    if smote is None:
        return 5
    if type(smote).__name__ != "SMOTE" or not hasattr(smote, "k_neighbors"):
        raise UnsupportedError("smote=%r: only None or a SMOTE object is supported" % (smote,))
    return neighbors_k(smote.k_neighbors, "k_neighbors")


class SMOTEENN(BaseSampler):
    """SMOTE then edited nearest neighbours (``enn``: None = ENN(sampling_strategy='all'),
    or an EditedNearestNeighbours whose n_neighbors and kind_sel are used)."""

    _method = RESAMPLE_SMOTEENN

    def __init__(self, *, sampling_strategy="auto", random_state=None, smote=None, enn=None,
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.smote = smote
        self.enn = enn
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.k_neighbors = _smote_k(self.smote)
        if self.enn is None:
            opt.n_neighbors, opt.kind_sel = 3, 0
        elif type(self.enn).__name__ == "EditedNearestNeighbours":
            opt.n_neighbors = neighbors_k(self.enn.n_neighbors, "n_neighbors")
            opt.kind_sel = 1 if self.enn.kind_sel == "mode" else 0
        else:
            raise UnsupportedError("enn=%r: only None or EditedNearestNeighbours" % (self.enn,))


class SMOTETomek(BaseSampler):
    """SMOTE then Tomek links (``tomek``: None or a TomekLinks object)."""

    _method = RESAMPLE_SMOTETOMEK

    def __init__(self, *, sampling_strategy="auto", random_state=None, smote=None, tomek=None,
                 n_jobs=None):
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.smote = smote
        self.tomek = tomek
        self.n_jobs = n_jobs

    def _set_options(self, opt, n_features):
        opt.k_neighbors = _smote_k(self.smote)
        if self.tomek is not None and type(self.tomek).__name__ != "TomekLinks":
            raise UnsupportedError("tomek=%r: only None or TomekLinks" % (self.tomek,))
