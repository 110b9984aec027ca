"""The simulator's documented examples run (docstrings and docs/SERVER_PROFILES.md)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import fleetcast.contract.simulate as simulate
from fleetcast.contract.simulate import stream

DOC = Path(__file__).resolve().parents[3] / "docs" / "SERVER_PROFILES.md"


@pytest.mark.parametrize("module", [simulate, stream])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


def test_server_profiles_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks
    namespace: dict[str, object] = {}
    exec(blocks[0], namespace)  # the documented stream example, as a reader would paste it
    history = namespace["history"]
    rows = namespace["rows"]
    assert len(history["cpu_pct"]) == 90 * 288  # type: ignore[index]
    assert len(rows["cpu_pct"]) == 90  # type: ignore[index]
    assert namespace["stream"].scenario == "degrading"  # type: ignore[attr-defined]


def test_documented_naming_table_matches_the_contract() -> None:
    from fleetcast.contract.schema import PROFILE_NAME_PREFIXES

    text = DOC.read_text()
    for profile, (prefix, digits) in PROFILE_NAME_PREFIXES.items():
        assert f"| {profile} | `{prefix}{'#' * digits}` |" in text
