"""validate_model_compatibility: a model's metadata against the contract and a table."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from fleetcast.contract import (
    VALID_PROFILES,
    VALID_STATES,
    DataValidator,
    ServerEncoder,
    validate_model_compatibility,
)
from fleetcast.contract.schema import CONTRACT_VERSION


@pytest.fixture
def metadata() -> dict[str, object]:
    """Metadata of a compatible model that knows ppml0001 and ppdb001 (not ppweb001)."""
    return {
        "contract_version": "1.0.0",
        "states": list(VALID_STATES),
        "profiles": list(VALID_PROFILES),
        "step_seconds": 300,
        "server_mapping": ServerEncoder(["ppml0001", "ppdb001"]).to_dict()["servers"],
    }


def test_compatible_model_reports_unknown_servers(metadata, tables):
    is_compatible, errors, unknown = validate_model_compatibility(metadata, tables.table())
    assert (is_compatible, errors, unknown) == (True, [], ["ppweb001"])


def test_onnx_style_json_strings_and_full_mapping_file(metadata, tables, tmp_path):
    onnx_props = {k: json.dumps(v) for k, v in metadata.items()}
    onnx_props["server_mapping"] = json.dumps(ServerEncoder(["ppweb001"]).to_dict())
    report = validate_model_compatibility(onnx_props, tables.table())
    assert report.is_compatible
    assert report.unknown_servers == ["ppdb001", "ppml0001"]
    path = tmp_path / "m.parquet"
    import pyarrow.parquet as pq

    pq.write_table(tables.table(), path)
    assert DataValidator().validate_model_compatibility(onnx_props, path).is_compatible


def test_metadata_only(metadata):
    assert validate_model_compatibility(metadata) == (True, [], [])
    del metadata["server_mapping"]
    assert validate_model_compatibility(metadata).is_compatible


@pytest.mark.parametrize(
    ("version", "compatible"), [("1.0.0", True), ("1.3.2", True), ("2.0.0", False), ("0.9", False)]
)
def test_contract_version_major(metadata, version, compatible):
    metadata["contract_version"] = version
    report = validate_model_compatibility(metadata)
    assert report.is_compatible is compatible
    if not compatible:
        assert (
            f"trained on data contract {version}; this code implements {CONTRACT_VERSION}"
            in (report.errors[0])
        )
        assert report.errors[0].endswith("See docs/DATA_CONTRACT.md#model-contract-version.")


def test_missing_version_and_lists(metadata):
    report = validate_model_compatibility({"step_seconds": 300})
    assert not report.is_compatible
    sections = [e.rsplit("See ", 1)[1] for e in report.errors]
    assert sections == [
        "docs/DATA_CONTRACT.md#model-contract-version.",
        "docs/DATA_CONTRACT.md#model-states.",
        "docs/DATA_CONTRACT.md#model-profiles.",
    ]


def test_state_and_profile_mismatch(metadata):
    metadata["states"] = [*VALID_STATES[:7], "exploding"]
    metadata["profiles"] = list(VALID_PROFILES[:6])
    errors = validate_model_compatibility(metadata).errors
    assert errors[0].startswith(
        f"States count mismatch: the model has 8 states, the contract {CONTRACT_VERSION} requires 8; "
        "missing from the model: ['recovery'], not in the contract: ['exploding']."
    )
    assert errors[0].endswith("See docs/DATA_CONTRACT.md#model-states.")
    assert "missing from the model: ['generic']" in errors[1]
    assert errors[1].endswith("See docs/DATA_CONTRACT.md#model-profiles.")


def test_data_values_the_model_does_not_know(metadata, tables):
    metadata["profiles"] = [p for p in VALID_PROFILES if p != "web_api"]
    errors = validate_model_compatibility(metadata, tables.table()).errors
    assert any("The data has profiles the model does not know: ['web_api']" in e for e in errors)


def test_step_mismatch_model_and_data(metadata, tables):
    metadata["step_seconds"] = 60
    errors = validate_model_compatibility(metadata, tables.table()).errors
    assert errors[0].startswith("The model's step_seconds is 60; the contract step is 300.")
    assert "The data's step is 300 s; the model's step is 60 s." in errors[1]
    assert all(e.endswith("See docs/DATA_CONTRACT.md#model-step.") for e in errors)
    cols = tables.columns()
    cols["timestamp"] = [t // 5 for t in cols["timestamp"]]  # one-minute data
    metadata["step_seconds"] = 300
    errors = validate_model_compatibility(metadata, tables.table(cols)).errors
    assert errors == [e for e in errors if "The data's step is 60 s" in e]
    assert len(errors) == 1


def test_mapping_that_breaks_the_hash_rule(metadata):
    metadata["server_mapping"] = {"ppml0001": "000000000000"}
    errors = validate_model_compatibility(metadata).errors
    assert "disagree with the SHA-256 ID rule, e.g. 'ppml0001' -> '000000000000'" in errors[0]
    metadata["server_mapping"] = ["ppml0001"]
    assert (
        "server_mapping in the model metadata is a list"
        in (validate_model_compatibility(metadata).errors[0])
    )


def test_table_without_server_names(metadata, tables):
    table = tables.table().drop_columns(["server_name"])
    report = validate_model_compatibility(metadata, table)
    assert report == (True, [], [])
    assert isinstance(table, pa.Table)


def test_onnx_metadata_props_with_their_key_prefix(metadata, tables):
    """An ONNX file's metadata_props carry the ``fleetcast.`` prefix (model_spec.METADATA_KEYS)."""
    props = {f"fleetcast.{k}": json.dumps(v) for k, v in metadata.items()}
    assert validate_model_compatibility(props, tables.table()) == (True, [], ["ppweb001"])
    props["fleetcast.contract_version"] = json.dumps("2.0.0")
    errors = validate_model_compatibility(props).errors
    assert len(errors) == 1
    assert errors[0].endswith("See docs/DATA_CONTRACT.md#model-contract-version.")


def test_data_step_is_measured_on_the_first_rows_only(metadata, tables, monkeypatch):
    """docs/DATA_CONTRACT.md#model-step: the first million rows, not the batches around them."""
    from fleetcast.contract import compatibility

    cols = tables.columns(steps=12)  # 36 rows at 300 s, then one-minute rows
    first = len(cols["timestamp"])
    end = cols["timestamp"][-1]
    for k in range(1, 41):
        for name in ("ppml0001", "ppdb001", "ppweb001"):
            row = tables.row(cols, 0)
            row["timestamp"] = end + k * 60 * 1_000_000
            row["server_name"] = name
            tables.append(cols, row)
    table = tables.table(cols)
    errors = validate_model_compatibility(metadata, table).errors
    assert any("The data's step is 60 s" in e for e in errors)
    monkeypatch.setattr(compatibility, "_STEP_SAMPLE_ROWS", first)
    assert validate_model_compatibility(metadata, table) == (True, [], ["ppweb001"])


def test_a_key_given_both_ways_is_read_without_its_prefix(metadata):
    """docs/DATA_CONTRACT.md#model-compatibility: the plain key wins over the prefixed one."""
    props = {f"fleetcast.{k}": json.dumps(v) for k, v in metadata.items()}
    props["fleetcast.contract_version"] = json.dumps("2.0.0")  # would be refused alone
    props["contract_version"] = metadata["contract_version"]
    assert validate_model_compatibility(props).is_compatible
    del props["contract_version"]
    assert not validate_model_compatibility(props).is_compatible
