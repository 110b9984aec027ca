"""Exponential backoff with jitter, for retrying Prometheus queries and alert deliveries."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays ``initial * factor**n`` capped at ``maximum``, each stretched by up to ``jitter``.

    >>> b = Backoff(initial_s=1.0, maximum_s=5.0, jitter=0.0)
    >>> [b.next_delay() for _ in range(5)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> b.reset(); b.failures
    0
    """

    initial_s: float = 1.0
    """First delay in seconds."""
    maximum_s: float = 60.0
    """Longest delay in seconds."""
    factor: float = 2.0
    """Growth per consecutive failure."""
    jitter: float = 0.1
    """Each delay is multiplied by a random factor in [1, 1 + jitter] (spreads retries)."""
    seed: int | None = None
    """Seed of the jitter (tests); None = random."""
    failures: int = 0
    """Consecutive failures so far."""
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.initial_s > 0 and self.maximum_s >= self.initial_s and self.factor >= 1):
            raise ValueError(
                "Backoff needs initial_s > 0, maximum_s >= initial_s and factor >= 1, but got "
                f"{self.initial_s}, {self.maximum_s}, {self.factor}."
            )
        self._rng = random.Random(self.seed)

    def next_delay(self) -> float:
        """The delay before the next try (counts one more failure)."""
        base = min(self.maximum_s, self.initial_s * self.factor ** min(self.failures, 64))
        self.failures += 1
        if self.jitter > 0:
            base = min(
                self.maximum_s * (1 + self.jitter), base * (1 + self.jitter * self._rng.random())
            )
        return base

    def reset(self) -> None:
        """A success: the next failure starts again at ``initial_s``."""
        self.failures = 0
