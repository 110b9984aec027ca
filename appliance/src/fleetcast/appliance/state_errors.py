"""The refusals of :mod:`fleetcast.appliance.persistence` when the state directory cannot be
used as it is: a damaged sample log with acknowledged frames after the damage, or a hole in
the log generations. Each says what, why, how to fix and where (docs/OPERATIONS.md#state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetcast.appliance.errors import ExplainedError

if TYPE_CHECKING:
    from pathlib import Path

    from fleetcast.appliance.log_frames import Entry

__all__ = [
    "BACKUP_DOC",
    "STATE_DOC",
    "LogScan",
    "StateError",
    "damaged_log_error",
    "log_name",
    "missing_logs_error",
]

STATE_DOC = "docs/OPERATIONS.md#state"
BACKUP_DOC = "docs/OPERATIONS.md#back-up-and-restore"


def log_name(generation: int) -> str:
    """The file name of sample log ``generation``."""
    return f"log-{generation:08d}.wal"


class StateError(ExplainedError):
    """The state directory cannot be used as it is (in use, damaged). The message says what,
    why, how to fix, where; the runtime turns it into a StartupError."""


@dataclass
class LogScan:
    """One log generation as read at start-up."""

    path: Path
    size: int
    batches: list[Entry]
    valid: int
    """Byte offset after the last good frame before the first bad one (``size`` if clean)."""
    problem: str | None
    intact_after: int = 0
    """Intact frames after the first bad one."""
    next_intact: int | None = None
    """Byte offset of the first of them."""


def _frames(n: int) -> str:
    return f"{n} intact frame" + ("" if n == 1 else "s")


def _follow(n: int) -> str:
    return "follows" if n == 1 else "follow"


def missing_logs_error(state_dir: Path, missing: list[int], kept: list[int]) -> StateError:
    """The error for a hole in the sample logs (a copy that paired an older snapshot with
    newer logs, or a log file removed by hand)."""
    names = [log_name(g) for g in missing]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return StateError(
        f"The state directory lacks the sample log {shown}, although its snapshot or a "
        f"later log ({log_name(max(kept))}) continues from it; nothing was "
        "changed.",
        "the samples acknowledged in a missing log are in no other file: starting would "
        "lose them silently. A backup that copied the snapshot before the logs leaves "
        "such a hole when a snapshot ran between the two copies.",
        f"restore the missing files, or a backup that copied the logs first "
        f"({BACKUP_DOC}); or, to accept losing what they held, create each one empty "
        f"(touch {state_dir / names[0]}) and start again.",
        STATE_DOC,
    )


def damaged_log_error(scan: LogScan, later: int) -> StateError:
    """The error for a damaged frame with intact (acknowledged) frames after it."""
    name = scan.path.name
    follow = []
    if scan.intact_after:
        assert scan.next_intact is not None
        follow.append(
            f"{_frames(scan.intact_after)} ({scan.size - scan.next_intact} bytes from byte "
            f"{scan.next_intact}) {_follow(scan.intact_after)} it in that file"
        )
    if later:
        follow.append(f"{_frames(later)} {_follow(later)} in later log files")
    return StateError(
        f"The sample log {name} in the state directory is damaged at byte {scan.valid} "
        f"({scan.problem}), and {' and '.join(follow)}; the file was left as it is.",
        "a crash mid-write only ever damages the last frame; damage followed by intact "
        "frames is damage to samples that were acknowledged, and cutting the file there "
        "would silently drop them.",
        f"restore the state directory from the backup ({BACKUP_DOC}); or, to accept "
        f"losing every sample in {name} ({scan.size} bytes), move {scan.path} out of the "
        "state directory and start again.",
        STATE_DOC,
    )
