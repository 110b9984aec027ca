"""ServerEncoder and profile_from_name: stable hash IDs and the codex naming conventions."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from fleetcast.contract import ContractError, ServerEncoder, profile_from_name, server_id
from fleetcast.contract import encoder as encoder_module
from fleetcast.contract.schema import CONTRACT_VERSION


def test_id_is_the_sha256_prefix():
    assert server_id("ppml0001") == hashlib.sha256(b"ppml0001").hexdigest()[:12]
    assert len(server_id("x")) == 12
    assert server_id("ppml0001") != server_id("ppml0002")


def test_id_is_the_same_in_a_fresh_process():
    names = ["ppml0001", "ppdb001", "hôte-ü"]
    code = (
        "import json, sys; from fleetcast.contract import server_id; "
        f"print(json.dumps([server_id(n) for n in {names!r}]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == [server_id(n) for n in names]


def test_ids_do_not_depend_on_fit_order():
    names = [f"ppweb{i:03d}" for i in range(5)]
    forward, backward = ServerEncoder(names), ServerEncoder(reversed(names))
    assert [forward.encode(n) for n in names] == [backward.encode(n) for n in names]
    assert len({forward.encode(n) for n in names}) == 5


def test_encode_decode_and_unknown_names():
    enc = ServerEncoder(["ppml0001", "ppdb001"])
    assert enc.decode(enc.encode("ppdb001")) == "ppdb001"
    assert enc.encode("never-seen") == server_id("never-seen")
    assert "never-seen" not in enc
    assert len(enc) == 2


def test_decode_unknown_id_says_how_to_fix():
    enc = ServerEncoder(["ppml0001"])
    with pytest.raises(
        KeyError,
        match=r"Unknown server ID 'abc'.*Fix: decode with the server_mapping.json.*#server-ids",
    ):
        enc.decode("abc")


def test_save_load_round_trip(tmp_path):
    enc = ServerEncoder(["ppml0001", "ppdb001", "ppweb001"])
    path = enc.save(tmp_path)
    assert path.name == "server_mapping.json"
    data = json.loads(path.read_text())
    assert data["contract_version"] == CONTRACT_VERSION
    assert data["algorithm"] == "sha256-hex12"
    assert data["servers"] == {n: server_id(n) for n in ["ppdb001", "ppml0001", "ppweb001"]}
    loaded = ServerEncoder.load(path)
    assert loaded.names == enc.names
    assert ServerEncoder.load(tmp_path).decode(server_id("ppdb001")) == "ppdb001"


def test_load_rejects_missing_or_tampered_mapping(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"server_mapping.json not found.*fleetcast train"):
        ServerEncoder.load(tmp_path)
    (tmp_path / "server_mapping.json").write_text(json.dumps({"servers": {"ppml0001": "0" * 12}}))
    with pytest.raises(ContractError, match=r"maps 'ppml0001' to '000000000000'"):
        ServerEncoder.load(tmp_path)
    with pytest.raises(ContractError, match="has no 'servers' object"):
        ServerEncoder.from_dict({})


def test_load_refuses_a_mapping_made_by_another_id_rule():
    good = ServerEncoder(["ppdb001"]).to_dict()
    assert ServerEncoder.from_dict(good).names == ["ppdb001"]
    with pytest.raises(ContractError, match=r"says its IDs are 'md5'.*'sha256-hex12'"):
        ServerEncoder.from_dict({**good, "algorithm": "md5"})


def test_collision_is_an_error_with_a_way_out(monkeypatch):
    monkeypatch.setattr(encoder_module, "server_id", lambda name: "deadbeef0000")
    with pytest.raises(ContractError) as info:
        ServerEncoder(["ppml0001", "ppml0002"])
    message = str(info.value)
    assert "Server ID collision: 'ppml0002' and 'ppml0001' both hash to deadbeef0000." in message
    assert "Rename one of the two servers" in message
    assert message.endswith("See docs/DATA_CONTRACT.md#server-ids.")


@pytest.mark.parametrize("bad", ["", None, 42])
def test_invalid_names(bad):
    with pytest.raises(ContractError, match="expected a non-empty string"):
        ServerEncoder([bad])


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("ppml0001", "ml_compute"),
        ("ppml12345", "ml_compute"),
        ("ppdb001", "database"),
        ("ppweb500", "web_api"),
        ("ppcon01", "conductor_mgmt"),
        ("ppetl100", "data_ingest"),
        ("pprisk050", "risk_analytics"),
        ("ppgen001", "generic"),
        ("PPDB150", "database"),
        (" ppweb001 ", "web_api"),
        # fallbacks: too few digits, suffixes, unknown prefixes
        ("ppml001", "generic"),
        ("ppcon1", "generic"),
        ("ppdb001a", "generic"),
        ("db-prod-01", "generic"),
        ("pp", "generic"),
        ("", "generic"),
    ],
)
def test_profile_from_name(name, profile):
    assert profile_from_name(name) == profile


def test_profile_rules_compile_and_refuse_bad_ones() -> None:
    from fleetcast.contract.encoder import parse_profile_rules

    rules = parse_profile_rules(["^db-=database", "web=web_api"])
    assert [(p.pattern, prof) for p, prof in rules] == [("^db-", "database"), ("web", "web_api")]
    with pytest.raises(ValueError, match="REGEX=PROFILE"):
        parse_profile_rules(["^db-=nosuchprofile"])
    with pytest.raises(ValueError, match="invalid regex"):
        parse_profile_rules(["(=database"])
