"""The export's refusals made before any work, and the error they raise.

:class:`ExportError` (every failed check of an export), the opset range
(:data:`MIN_OPSET` .. :func:`max_opset`, :func:`check_opset`), the files an export writes
(:func:`output_paths`) and the checks that they can be written (:func:`check_output`,
:func:`check_folder`), and :func:`split_explained`, which takes a four-part message apart.
Split from :mod:`fleetcast.exporter.export`, which re-exports them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fleetcast.contract.errors import ContractError
from fleetcast.exporter.metadata import SIDECAR_SUFFIX
from fleetcast.exporter.onnx_graph import DEFAULT_OPSET

__all__ = [
    "MIN_OPSET",
    "ExportError",
    "check_folder",
    "check_opset",
    "check_output",
    "max_opset",
    "output_paths",
    "split_explained",
]

_DOC_PAGE = "docs/EXPORT.md"


class ExportError(ContractError):
    """An export that failed a check; nothing was written."""


MIN_OPSET = 11
"""Lowest ONNX opset the graph exports at: the TFT's interpolation (``upsample_linear1d``
with ``align_corners``) needs the ``Resize`` of opset 11; 7-10 fail in the exporter."""

_FALLBACK_MAX_OPSET = 20
"""The TorchScript exporter's own maximum when torch does not say (torch 2.13 accepts 23)."""


def max_opset() -> int:
    """Highest ONNX opset torch's TorchScript exporter accepts (torch 2.13: 23)."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - a torch without the module
        return _FALLBACK_MAX_OPSET
    return int(getattr(_constants, "ONNX_MAX_OPSET", _FALLBACK_MAX_OPSET))


def check_opset(opset: object) -> int:
    """``opset`` if the exporter supports it (:data:`MIN_OPSET` .. :func:`max_opset`), else
    :class:`ExportError`."""
    high = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= high:
        raise ExportError(
            f"--opset {opset} is outside the opsets this exporter supports ({MIN_OPSET}..{high}).",
            f"below {MIN_OPSET} ONNX has no operator for the TFT's interpolation; above "
            f"{high} torch's TorchScript exporter has no translation.",
            f"Leave --opset out (default {DEFAULT_OPSET}, which ONNX Runtime 1.18+ and "
            f"TensorRT 8.6+ run) or pass one of {MIN_OPSET}..{high}.",
            f"{_DOC_PAGE}#refusals",
        )
    return opset


_EXPLAINED = re.compile(
    r"(?s)(?P<what>.*?) Why it matters: (?P<why>.*?) Fix: (?P<fix>.*) See (?P<see>\S+?)\.?\s*"
)


def split_explained(text: str) -> tuple[str, str, str, str] | None:
    """The four parts of a message composed by :func:`fleetcast.contract.errors.explain`
    (what, why, fix, see), or None when ``text`` is not in that shape."""
    match = _EXPLAINED.fullmatch(text.strip())
    if match is None:
        return None
    return match["what"], match["why"], match["fix"], match["see"]


def output_paths(path: str | Path, fp16: bool = False) -> list[Path]:
    """Every file an export to ``path`` writes: the model, its sidecar, the float16 pair."""
    path = Path(path)
    out = [path, path.with_name(path.name + SIDECAR_SUFFIX)]
    if fp16:
        half = path.with_name(path.stem + ".fp16.onnx")
        out += [half, half.with_name(half.name + SIDECAR_SUFFIX)]
    return out


def check_output(path: str | Path, fp16: bool = False, flag: str = "--out") -> None:
    """Refuse (:class:`ExportError`) an output path that cannot be written, before any work.

    The nearest existing folder above ``path`` must be a writable folder (not a file), and
    none of the files the export writes may be a folder.
    """
    path = Path(path)
    for target in output_paths(path, fp16):
        if target.is_dir():
            raise ExportError(
                f"{flag} {path}: {target} is a folder, not a file.",
                "the exporter writes the model as a file at that path; nothing was written.",
                f"Pass a file path such as {target / 'model.onnx'} (or remove the folder).",
                f"{_DOC_PAGE}#refusals",
            )
    check_folder(path.parent, flag, path)


def check_folder(folder: Path, flag: str, shown: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a writable folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(
            f"{flag} {shown}: {probe} is a file, so no folder can be made inside it.",
            "the exporter checks every place it writes before it writes anything; nothing "
            "was written.",
            f"Choose a {flag} path under a folder (or move {probe} away).",
            f"{_DOC_PAGE}#refusals",
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(
            f"{flag} {shown}: the folder {probe} is not writable.",
            "the exporter checks every place it writes before it writes anything; nothing "
            "was written.",
            f"Choose a {flag} path in a folder you can write to, or fix its permissions.",
            f"{_DOC_PAGE}#refusals",
        )
