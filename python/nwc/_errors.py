"""The exceptions of the nwc package.

Every failure inside nwc's C++ code carries a status code of the C ABI
(``sdk/include/nwc/status.h``) and a one-line message naming the file, key or plugin and what
was expected — the text the ``nwc`` command prints after ``error:``. The code picks the class:

=========================  ==================================  ===========================
class                      status codes                        also a subclass of
=========================  ==================================  ===========================
InvalidArgumentError       NWC_E_INVALID_ARG                   ValueError
InvalidOptionError         NWC_E_INVALID_OPTION                InvalidArgumentError
UnsupportedError           NWC_E_UNSUPPORTED_DTYPE, _SHAPE,    —
                           NWC_E_DEVICE, a build without the
                           model runtime
OutOfMemoryError           NWC_E_NOMEM                         MemoryError
CorruptStreamError         NWC_E_CORRUPT_STREAM                —
VersionError               NWC_E_VERSION                       —
IoError                    NWC_E_IO                            OSError
InternalError              NWC_E_INTERNAL, _BUFFER_TOO_SMALL,  —
                           plugin-private and unknown codes
=========================  ==================================  ===========================

All derive from :class:`Error`, whose ``code`` is the status code and ``status`` its name.
"""

from __future__ import annotations

NWC_E_INVALID_ARG = -1
NWC_E_INVALID_OPTION = -2
NWC_E_UNSUPPORTED_DTYPE = -3
NWC_E_NOMEM = -4
NWC_E_CORRUPT_STREAM = -5
NWC_E_VERSION = -6
NWC_E_BUFFER_TOO_SMALL = -7
NWC_E_DEVICE = -8
NWC_E_INTERNAL = -9
NWC_E_UNSUPPORTED_SHAPE = -10
NWC_E_IO = -11

_NAMES = {
    NWC_E_INVALID_ARG: "NWC_E_INVALID_ARG",
    NWC_E_INVALID_OPTION: "NWC_E_INVALID_OPTION",
    NWC_E_UNSUPPORTED_DTYPE: "NWC_E_UNSUPPORTED_DTYPE",
    NWC_E_NOMEM: "NWC_E_NOMEM",
    NWC_E_CORRUPT_STREAM: "NWC_E_CORRUPT_STREAM",
    NWC_E_VERSION: "NWC_E_VERSION",
    NWC_E_BUFFER_TOO_SMALL: "NWC_E_BUFFER_TOO_SMALL",
    NWC_E_DEVICE: "NWC_E_DEVICE",
    NWC_E_INTERNAL: "NWC_E_INTERNAL",
    NWC_E_UNSUPPORTED_SHAPE: "NWC_E_UNSUPPORTED_SHAPE",
    NWC_E_IO: "NWC_E_IO",
}


class Error(Exception):
    """A failure reported by nwc: ``str(e)`` is the message, ``e.code`` the C ABI status."""

    code: int = NWC_E_INTERNAL

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def status(self) -> str:
        """The status code's name, e.g. ``"NWC_E_CORRUPT_STREAM"``."""
        if code_name := _NAMES.get(self.code):
            return code_name
        return "NWC_E_PLUGIN_PRIVATE" if self.code <= -1000 else "NWC_E_UNKNOWN"


class InvalidArgumentError(Error, ValueError):
    """An argument, file name, tensor or pipeline key that cannot be used as given."""

    code = NWC_E_INVALID_ARG


class InvalidOptionError(InvalidArgumentError):
    """A pipeline or plugin option that is unknown, of the wrong type or out of range."""

    code = NWC_E_INVALID_OPTION


class UnsupportedError(Error):
    """Something this build or stage does not handle (a dtype, a shape, the model runtime)."""

    code = NWC_E_UNSUPPORTED_DTYPE


class OutOfMemoryError(Error, MemoryError):
    """An allocation failed."""

    code = NWC_E_NOMEM


class CorruptStreamError(Error):
    """File bytes that are inconsistent (bad magic, checksum mismatch, truncation)."""

    code = NWC_E_CORRUPT_STREAM


class VersionError(Error):
    """A container, stream or interface version this build cannot read."""

    code = NWC_E_VERSION


class IoError(Error, OSError):
    """Reading or writing a file failed."""

    code = NWC_E_IO


class InternalError(Error):
    """A bug or an unexpected failure inside nwc or a plugin."""

    code = NWC_E_INTERNAL


_CLASSES = {
    NWC_E_INVALID_ARG: InvalidArgumentError,
    NWC_E_INVALID_OPTION: InvalidOptionError,
    NWC_E_UNSUPPORTED_DTYPE: UnsupportedError,
    NWC_E_UNSUPPORTED_SHAPE: UnsupportedError,
    NWC_E_DEVICE: UnsupportedError,
    NWC_E_NOMEM: OutOfMemoryError,
    NWC_E_CORRUPT_STREAM: CorruptStreamError,
    NWC_E_VERSION: VersionError,
    NWC_E_IO: IoError,
}


def error_class(code: int) -> type[Error]:
    """The exception class for a status code (the extension module raises through this)."""
    return _CLASSES.get(code, InternalError)
