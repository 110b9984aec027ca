"""Why ``fleetcast serve`` did not start, in the operator's words (four parts).

:class:`FirstError` collects the errors logged while the app starts (a failed lifespan);
:func:`start_error` words an input or environment failure (a refused model, a path the OS
refuses, a port in use) and :func:`not_serving` a start that loaded its model but never
served. Used by :mod:`fleetcast.appliance.commands`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetcast.appliance.settings import Settings

__all__ = ["CLEAN_ERRORS", "FirstError", "not_serving", "os_error", "start_error"]

CLEAN_ERRORS = frozenset({"ModelError", "StartupError"})
"""Errors whose message is complete on its own (no traceback at the CLI)."""


class FirstError(logging.Handler):
    """Collects the errors logged during start-up (a failed lifespan), each reduced to one
    line, for the message of a start that did not serve."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Application startup failed") or len(self.texts) >= 10:
            return
        if record.exc_info and record.exc_info[1] is not None:
            self.texts.append(_one_line(record.exc_info[1]))
            return
        lines = [line.strip(" |") for line in message.splitlines() if line.strip(" |")]
        if len(lines) > 1:  # a formatted traceback: its innermost "Error: message" line
            found = [ln for ln in lines if _EXC_LINE.match(ln) and "Group" not in ln]
            message = (found or lines)[-1]
        self.texts.append(message)


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\w*: ")


def _one_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def not_serving(settings: Settings, errors: list[str]) -> str:
    """The four-part message of a start that loaded the model but never served."""
    from fleetcast.contract.errors import explain

    log = (
        f"the log file {settings.log_file or settings.state_dir / 'fleetcast.log'}"
        if settings.daemon
        else "the log above"
    )
    return explain(
        "The appliance loaded its model but did not start serving"
        + (f": {errors[0].rstrip('.')}." if errors else "."),
        "nothing serves.",
        f"read {log} for the details; if it is not bad input, please report it.",
        "docs/OPERATIONS.md#logs",
    )


def start_error(exc: BaseException, settings: Settings) -> str | None:
    """The four-part message of a start failure that is input or environment, else None."""
    from fleetcast.contract.errors import ContractError

    if isinstance(exc, OSError):
        return os_error(exc, settings)
    if isinstance(exc, ContractError) or type(exc).__name__ in CLEAN_ERRORS:
        return _model_link(settings) + str(exc)
    return None


def _model_link(settings: Settings) -> str:
    """``--model-dir … is a link to …: `` when it is one: behind ``models/latest`` the
    message alone does not say which bundle was refused (docs/OPERATIONS.md#upgrade-a-model)."""
    model_dir = Path(settings.model_dir)
    try:
        target = model_dir.resolve(strict=True)
    except OSError:
        return ""
    if target == model_dir.absolute():
        return ""
    return f"--model-dir {model_dir} is a link to {target}: "


def os_error(exc: OSError, settings: Settings) -> str:
    """What the OS refused at start, which path it was, and how to fix it (four parts)."""
    import errno

    from fleetcast.contract.errors import explain

    path = Path(os.fsdecode(exc.filename)) if exc.filename is not None else None
    reason = exc.strerror or type(exc).__name__
    state = settings.state_dir
    roles: list[tuple[Path, str, str, str, str]] = [
        (
            settings.pid_file or state / "fleetcast.pid",
            "pid file",
            "--pid-file",
            "--daemon writes the daemon's pid there (and refuses a second daemon with it).",
            "docs/OPERATIONS.md#without-systemd",
        ),
        (
            settings.log_file or state / "fleetcast.log",
            "log file",
            "--log-file",
            "--daemon writes the appliance's log there.",
            "docs/OPERATIONS.md#without-systemd",
        ),
        (
            state,
            "state directory",
            "--state-dir",
            "the appliance logs every accepted sample there before acknowledging it and "
            "restores the history from it at start.",
            "docs/OPERATIONS.md#state",
        ),
        (
            settings.model_dir,
            "model folder",
            "--model-dir",
            "the appliance cannot forecast without its model.",
            "docs/OPERATIONS.md#install",
        ),
    ]
    # The role whose path is, or holds, the refused path; else one below it (a parent
    # folder that could not be created).
    matches = [r for r in roles if path is not None and (path == r[0] or r[0] in path.parents)]
    matches += [r for r in roles if path is not None and path in r[0].parents]
    root, label, flag, why, see = (
        matches[0]
        if matches
        else (
            path,
            "file",
            "the setting that names it",
            "the appliance cannot start without it.",
            "docs/OPERATIONS.md#configuration",
        )
    )
    where = f" ({path})" if path is not None and path != root else ""
    if root is None:
        what = f"The operating system refused an operation at start: {reason}."
    else:
        what = f"Cannot use the {label} {root}: {reason}{where}."
    systemd = label == "state directory"
    code = exc.errno
    if code == errno.EROFS:
        fix = f"point {flag} at a writable file system" + (
            "; under systemd keep the unit's StateDirectory=fleetcast, which stays writable "
            "under ProtectSystem=strict (docs/OPERATIONS.md#systemd)."
            if systemd
            else "."
        )
    elif code in (errno.EACCES, errno.EPERM):
        fix = (
            f"give {_user()} access to {root} (chown/chmod), or point {flag} at a path it owns"
            + (
                "; under systemd let StateDirectory= create it with the right owner."
                if systemd
                else "."
            )
        )
    elif code == errno.EEXIST:
        fix = f"{path} is a file, not a directory: move it aside, or point {flag} elsewhere."
    elif code == errno.ENOTDIR:
        fix = (
            f"a part of {path} is a file, not a directory: move it aside, or point {flag} "
            "elsewhere."
        )
    elif code == errno.EISDIR:
        fix = f"{path} is a directory, not a file: point {flag} at a file path."
    elif code in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free space on that file system, or point {flag} at another one."
    elif code == errno.ENOENT:
        fix = f"check the path given with {flag}: it does not exist."
    else:
        fix = f"check {path or root} and its permissions, or point {flag} elsewhere."
    return explain(what, why, fix, see)


def _user() -> str:
    """The user this process runs as, for messages."""
    import pwd

    uid = os.geteuid()
    try:
        return f"the user running fleetcast ({pwd.getpwuid(uid).pw_name}, uid {uid})"
    except KeyError:
        return f"the user running fleetcast (uid {uid})"
