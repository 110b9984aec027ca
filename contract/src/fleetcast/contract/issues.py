"""One finding of a validator: which rule, how bad, and the codex's four parts.

Every rule of docs/DATA_CONTRACT.md has an identifier that is also the anchor of its
section in that document (``value-ranges`` → ``docs/DATA_CONTRACT.md#value-ranges``), so a
message always points at the paragraph that explains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleetcast.contract.errors import explain
from fleetcast.contract.schema import CONTRACT_DOC

__all__ = ["MAX_EXAMPLES", "Issue", "Severity", "plural"]

MAX_EXAMPLES = 3
"""Example rows/servers quoted per finding."""

Severity = Literal["error", "warning"]


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,200 rows``: a count with its noun."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


@dataclass(frozen=True)
class Issue:
    """A rule violated by a table (an error) or a doubt about it (a warning)."""

    rule: str
    """Rule identifier and anchor of its section in docs/DATA_CONTRACT.md."""
    severity: Severity
    """``error`` makes the table invalid; ``warning`` is reported and does not."""
    what: str
    """What is wrong, with expected and actual values and counts."""
    why: str
    """Why it matters."""
    fix: str
    """How to fix it."""
    count: int = 0
    """How many rows (or servers, or columns) are affected; 0 when not countable."""
    examples: tuple[str, ...] = ()
    """A few offending rows or servers, already formatted."""

    @property
    def see(self) -> str:
        """The document section that explains the rule, e.g. ``docs/DATA_CONTRACT.md#states``."""
        return f"{CONTRACT_DOC}#{self.rule}"

    @property
    def message(self) -> str:
        """The full codex message: what (with examples), why, fix, see."""
        what = self.what
        if self.examples:
            what = f"{what} Examples: {'; '.join(self.examples)}."
        return explain(what, self.why, self.fix, self.see)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        """JSON form (``fleetcast validate --json``)."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "count": self.count,
            "what": self.what,
            "why": self.why,
            "fix": self.fix,
            "examples": list(self.examples),
            "see": self.see,
            "message": self.message,
        }
