"""One error type for contract violations, with the codex's four parts."""

from __future__ import annotations

__all__ = ["ContractError", "Explained", "explain"]


def explain(what: str, why: str, fix: str, see: str) -> str:
    """Compose a message in the codex's shape: what went wrong, why it matters, how to fix, which doc.

    ``see`` is a document reference such as ``docs/DATA_CONTRACT.md#states``.
    """
    return f"{what} Why it matters: {why} Fix: {fix} See {see}."


class Explained(Exception):
    """An error whose message is :func:`explain`'s; each part stays an attribute (``what``,
    ``why``, ``fix``, ``see``). Mixed with the built-in type a caller catches."""

    def __init__(self, what: str, why: str, fix: str, see: str) -> None:
        self.what = what
        self.why = why
        self.fix = fix
        self.see = see
        super().__init__(explain(what, why, fix, see))


class ContractError(Explained, ValueError):
    """Input that breaks docs/DATA_CONTRACT.md. The message always says what, why, how to fix, where."""
