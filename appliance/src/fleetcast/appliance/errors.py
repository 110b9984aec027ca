"""The base of the appliance's refusals whose message has the codex's four parts.

:class:`~fleetcast.appliance.model.ModelError` (a model it will not serve) and
:class:`~fleetcast.appliance.persistence.StateError` (a state directory it cannot use)
derive from :class:`ExplainedError`; the message and its
parts come from :class:`fleetcast.contract.errors.Explained`.
"""

from __future__ import annotations

from fleetcast.contract.errors import Explained

__all__ = ["ExplainedError"]


class ExplainedError(Explained, RuntimeError):
    """An error whose message says what went wrong, why it matters, how to fix it and
    which doc to read (``what``, ``why``, ``fix``, ``see``)."""
