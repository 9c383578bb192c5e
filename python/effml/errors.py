"""Exception classes raised by effml (re-exported from :mod:`effml._errors`).

See :mod:`effml._errors` for the table of C status codes and the builtin
exception each class also derives from.
"""
from ._errors import *  # noqa: F401,F403
from ._errors import STATUS_EXCEPTIONS, EffmlError, UnknownStatusError, error_for  # noqa: F401
