"""Importers of real fleet history: ``fleetcast import prometheus`` and ``fleetcast import csv``.

Both write contract-valid Parquet (``fleetcast.contract.schema.arrow_schema()``, state null
= unknown, gaps kept as gaps) plus ``<name>.metadata.json``. See docs/PROMETHEUS.md#import.
"""

from __future__ import annotations

__all__: list[str] = []
