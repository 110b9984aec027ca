"""The base of the appliance's refusals whose message has the codex's four parts.

:class:`~fleetcast.appliance.model.ModelError` (a model it will not serve) and
:class:`~fleetcast.appliance.persistence.StateError` (a state directory it cannot use)
derive from :class:`ExplainedError`; the message and its
parts come from :class:`fleetcast.contract.errors.Explained`.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from fleetcast.contract.errors import Explained

if TYPE_CHECKING:
    import logging

__all__ = ["ExplainedError", "log_failure", "write_error_cause"]


class ExplainedError(Explained, RuntimeError):
    """An error whose message says what went wrong, why it matters, how to fix it and
    which doc to read (``what``, ``why``, ``fix``, ``see``)."""


_WRITE_CAUSES = {
    errno.ENOSPC: "the disk holding the state directory is full",
    errno.EDQUOT: "the disk quota of the state directory's owner is used up",
    errno.EROFS: "the state directory's file system is mounted read-only",
    errno.EACCES: "the appliance may not write the state directory (permissions)",
    errno.EPERM: "the appliance may not write the state directory (permissions)",
    errno.EIO: "the disk reported an I/O error",
}


def write_error_cause(exc: OSError) -> str:
    """Why a write to the state directory failed, in an operator's words (with the errno)."""
    why = _WRITE_CAUSES.get(exc.errno or 0, "the state directory could not be written")
    code = errno.errorcode.get(exc.errno or 0)
    detail = exc.strerror or str(exc)
    return f"{why} ({code}: {detail})" if code else f"{why} ({detail})"


def log_failure(log: logging.Logger, what: str, exc: Exception) -> None:
    """Log ``what`` failed: one ERROR line naming the cause for a write the state directory
    refused (an operator's problem: full disk, permissions), a traceback for anything else
    (a bug to report)."""
    if isinstance(exc, OSError):
        log.error("%s: %s", what, write_error_cause(exc))
    else:
        log.error("%s", what, exc_info=exc)
