"""fleetcast's benchmark suite (docs/BENCHMARKS.md): one module per benchmark, one runner.

Run from a source checkout: ``python benchmarks/run.py [--quick | --full]`` or
``fleetcast bench``. Nothing heavy is imported here.
"""

from __future__ import annotations

__all__: list[str] = []
