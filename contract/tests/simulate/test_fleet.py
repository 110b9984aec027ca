"""Fleet composition and naming (codex proportions, naming convention)."""

from __future__ import annotations

import re

import pytest

from fleetcast.contract.encoder import profile_from_name
from fleetcast.contract.errors import ContractError
from fleetcast.contract.simulate.fleet import (
    CODEX_FLEET,
    build_fleet,
    fleet_composition,
    server_names,
)


def test_default_fleet_is_the_codex_fleet() -> None:
    assert fleet_composition(90) == {
        "web_api": 25,
        "ml_compute": 20,
        "database": 15,
        "data_ingest": 10,
        "risk_analytics": 8,
        "generic": 7,
        "conductor_mgmt": 5,
    }
    assert build_fleet().size == 90


@pytest.mark.parametrize("n", [1, 7, 10, 45, 91, 180, 1000, 10_000])
def test_any_size_keeps_the_proportions(n: int) -> None:
    counts = fleet_composition(n)
    assert sum(counts.values()) == n
    for profile, c in CODEX_FLEET.items():
        exact = n * c / 90
        assert abs(counts[profile] - exact) < 1.0, (profile, counts[profile], exact)


def test_double_fleet_doubles_every_profile() -> None:
    assert fleet_composition(180) == {p: 2 * c for p, c in CODEX_FLEET.items()}


def test_names_follow_the_convention_and_imply_their_profile() -> None:
    fleet = build_fleet(90)
    assert fleet.names[:2] == ("ppcon01", "ppcon02")
    assert {
        "ppml0001",
        "ppml0020",
        "ppdb015",
        "ppweb025",
        "ppetl010",
        "pprisk008",
        "ppgen007",
    } <= set(fleet.names)
    assert list(fleet.names) == sorted(fleet.names)
    assert len(set(fleet.names)) == 90
    for name, profile in zip(fleet.names, fleet.profiles, strict=True):
        assert profile_from_name(name) == profile


def test_digits_widen_when_a_count_exceeds_them() -> None:
    assert server_names("conductor_mgmt", 100)[-1] == "ppcon100"
    assert server_names("conductor_mgmt", 100)[0] == "ppcon001"
    assert server_names("ml_compute", 3) == ["ppml0001", "ppml0002", "ppml0003"]
    fleet = build_fleet(10_000)
    web = [n for n in fleet.names if n.startswith("ppweb")]
    assert len(web) == 2778
    assert web[0] == "ppweb0001"
    assert web[-1] == "ppweb2778"
    assert all(re.fullmatch(r"ppweb\d{4}", n) for n in web)
    assert all(profile_from_name(n) == p for n, p in zip(fleet.names, fleet.profiles, strict=True))


@pytest.mark.parametrize("bad", [0, -3, 2.5, "90", True])
def test_invalid_fleet_size_is_refused(bad: object) -> None:
    with pytest.raises(ContractError, match="Invalid fleet size"):
        fleet_composition(bad)  # type: ignore[arg-type]
