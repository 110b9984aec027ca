"""What a model says about its own training (from the exporter's provenance and its
categorical classes): the servers it learnt, the profiles no training server had, whether
its unknown-server embedding was trained. For /status, GET /servers and the load's
warnings (docs/SERVER_PROFILES.md, docs/DATA_CONTRACT.md#unknown-servers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetcast.contract.features import ModelSpec

__all__ = ["known_servers", "unknown_server_trained", "untrained_profiles"]


def known_servers(spec: ModelSpec) -> int:
    """Servers of the mapping whose own patterns the model learnt: with an embedding of
    their ID, as GET /servers ``known`` counts them (not those training made unknown: too
    short for a window, or nulled to train the unknown-server embedding)."""
    if "server_id" not in spec.categorical_classes:
        return len(spec.server_mapping)
    from fleetcast.contract.encoder import server_id

    codes = spec.encode_categorical("server_id", [server_id(n) for n in spec.server_mapping])
    unknown = spec.unknown_codes["server_id"]
    return sum(1 for code in codes if code != unknown)


def unknown_server_trained(spec: ModelSpec) -> bool | None:
    """Whether training trained the unknown-server embedding every server the model was
    not trained on is forecast from (false for a model trained on one server); None when
    the model does not say (exported before the exporter recorded it)."""
    trained = spec.provenance.get("unknown_server_trained")
    return trained if isinstance(trained, bool) else None


def untrained_profiles(spec: ModelSpec) -> tuple[str, ...] | None:
    """The profiles no training server with a window had: their embedding was never trained
    (docs/SERVER_PROFILES.md). The exporter copies them from ``training_info.json`` into the
    provenance; None when the model does not say (exported before it did, or by hand)."""
    named = spec.provenance.get("profiles_untrained")
    if not isinstance(named, list) or not all(isinstance(p, str) for p in named):
        return None
    return tuple(p for p in spec.profiles if p in named)
