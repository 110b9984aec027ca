#!/usr/bin/env python3
"""Run fleetcast's benchmark suite from a source checkout (docs/BENCHMARKS.md#running-it).

python benchmarks/run.py --quick          # CI: < 2 minutes
python benchmarks/run.py --full           # the docs run: ≤ ~15 minutes, updates docs/
python benchmarks/run.py --full --model-dir models/latest --only inference,service
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__: list[str] = []

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fleetbench.runner import main

    raise SystemExit(main())
