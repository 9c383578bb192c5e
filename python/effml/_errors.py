"""C status codes -> Python exceptions.

Every failing C call raises one of the classes below.  Each is a subclass of
:class:`EffmlError` *and* of the builtin a scikit-learn user already catches:

=====================  ==========  =========================================
C status               code        Python class (builtin bases)
=====================  ==========  =========================================
EFFML_E_INVALID_ARG    -1          InvalidArgumentError (ValueError)
EFFML_E_SHAPE          -2          ShapeError (ValueError)
EFFML_E_DTYPE          -3          DtypeError (ValueError, TypeError)
EFFML_E_NOMEM          -4          OutOfMemoryError (MemoryError)
EFFML_E_IO             -5          EffmlIOError (OSError)
EFFML_E_FORMAT         -6          FormatError (ValueError), as numpy's
                                   ``np.load`` for a malformed file
EFFML_E_NUMERIC        -7          NumericError (ValueError, ArithmeticError):
                                   NaN/inf inputs are bad values to sklearn
                                   users; singular/non-converged is numeric
EFFML_E_UNSUPPORTED    -8          UnsupportedError (NotImplementedError, a
                                   RuntimeError)
EFFML_E_NOT_FOUND      -9          NotFoundError (KeyError)
EFFML_E_OVERFLOW       -10         SizeOverflowError (ValueError, OverflowError)
EFFML_E_STATE          -11         StateError (RuntimeError)
EFFML_E_RANGE          -12         RangeError (ValueError, IndexError)
EFFML_E_CANCELLED      -13         CancelledError (RuntimeError): the
                                   context's progress callback or cancel
                                   request stopped the call
any other              <0          UnknownStatusError (RuntimeError)
=====================  ==========  =========================================

The exception's message is the C library's own message (which names the
argument and the value), prefixed by the C function's name; ``.status`` holds
the code and ``.function`` the C function.
"""


class EffmlError(Exception):
    """Base of every error raised for a failing libeffml call.

    Attributes: ``status`` (the negative C status code), ``function`` (the C
    function that failed, or None), ``message`` (the C library's message).
    """

    def __init__(self, message, status=None, function=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.function = function

    def __str__(self):  # KeyError would otherwise print the repr
        return self.message

    def __reduce__(self):
        return (type(self), (self.message, self.status, self.function))


class InvalidArgumentError(EffmlError, ValueError):
    """An argument is NULL/None, out of its allowed range, or not allowed here."""


class ShapeError(EffmlError, ValueError):
    """Shapes disagree, a dimension is zero or negative, or there are too many dims."""


class DtypeError(EffmlError, ValueError, TypeError):
    """Unsupported or mismatched element type."""


class OutOfMemoryError(EffmlError, MemoryError):
    """An allocation inside libeffml failed."""


class EffmlIOError(EffmlError, OSError):
    """A file could not be opened, read or written."""

    def __init__(self, message, status=None, function=None):
        OSError.__init__(self, message)
        self.message = message
        self.status = status
        self.function = function


class FormatError(EffmlError, ValueError):
    """A file's or buffer's contents are malformed."""


class NumericError(EffmlError, ValueError, ArithmeticError):
    """NaN/inf input, a singular matrix, or no convergence."""


class UnsupportedError(EffmlError, NotImplementedError):
    """A valid request that this build (or these bindings) does not implement."""


class NotFoundError(EffmlError, KeyError):
    """A named item (tensor, parameter, file entry) is absent."""


class SizeOverflowError(EffmlError, ValueError, OverflowError):
    """A size computation overflows size_t/int64_t."""


class StateError(EffmlError, RuntimeError):
    """A call out of order (e.g. backward before forward)."""


class RangeError(EffmlError, ValueError, IndexError):
    """An index or label is out of range."""


class CancelledError(EffmlError, RuntimeError):
    """The call was stopped by the context's progress callback or cancel request."""


class UnknownStatusError(EffmlError, RuntimeError):
    """A status code these bindings do not know (from a newer library)."""


#: C status code -> exception class.
STATUS_EXCEPTIONS = {
    -1: InvalidArgumentError,
    -2: ShapeError,
    -3: DtypeError,
    -4: OutOfMemoryError,
    -5: EffmlIOError,
    -6: FormatError,
    -7: NumericError,
    -8: UnsupportedError,
    -9: NotFoundError,
    -10: SizeOverflowError,
    -11: StateError,
    -12: RangeError,
    -13: CancelledError,
}


def error_for(status, message, function=None):
    """The exception instance for C ``status`` with ``message`` (not raised)."""
    cls = STATUS_EXCEPTIONS.get(status, UnknownStatusError)
    # The C message already starts with the public function called (0.2).
    prefixed = not function or message.startswith(function + ":")
    text = message if prefixed else "%s: %s" % (function, message)
    return cls(text, status, function)
