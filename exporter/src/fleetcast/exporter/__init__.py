"""fleetcast.exporter — a model bundle to one self-contained, parity-checked ONNX file.

Entry points: ``fleetcast export`` (:mod:`fleetcast.exporter.commands`),
:func:`fleetcast.exporter.bundle_export.export_bundle`, and
``python -m fleetcast.exporter.fixture DIR`` for the appliance's test fixture.
See docs/EXPORT.md.
"""

from __future__ import annotations

__all__: list[str] = []
