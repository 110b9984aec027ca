"""Stable server identities: SHA-256 hash IDs (never sequential) and profile-from-name."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcast.contract.errors import ContractError
from fleetcast.contract.schema import CONTRACT_VERSION, PROFILE_NAME_PREFIXES, VALID_PROFILES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "ID_HEX_DIGITS",
    "MAPPING_FILE",
    "ServerEncoder",
    "parse_profile_rules",
    "profile_from_name",
    "server_id",
]

ID_HEX_DIGITS = 12
"""Length of a server ID: the first 12 hex digits (48 bits) of SHA-256(name)."""
_ALGORITHM = f"sha256-hex{ID_HEX_DIGITS}"

MAPPING_FILE = "server_mapping.json"

_NAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    # Longest prefixes first so that "pprisk" is not read as something shorter.
    (re.compile(rf"^{prefix}\d{{{digits},}}$"), profile)
    for profile, (prefix, digits) in sorted(
        PROFILE_NAME_PREFIXES.items(), key=lambda item: -len(item[1][0])
    )
)


def server_id(name: str) -> str:
    """The stable ID of a server name: first 12 hex digits of SHA-256 of its UTF-8 bytes.

    Deterministic across processes and machines (no salt, no ``hash()``).
    """
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS]


def profile_from_name(name: str) -> str:
    """The profile implied by the codex naming convention, else ``generic``.

    >>> profile_from_name("ppml0015"), profile_from_name("ppdb001"), profile_from_name("host-a")
    ('ml_compute', 'database', 'generic')
    """
    lowered = name.strip().lower()
    for pattern, profile in _NAME_RULES:
        if pattern.match(lowered):
            return profile
    return "generic"


def parse_profile_rules(rules: Iterable[str]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Compile ``"REGEX=PROFILE"`` rules (matched against a server name, first wins).

    Raises ValueError naming the bad rule and the way out (docs/PROMETHEUS.md#profiles).
    """
    out = []
    for rule in rules:
        pattern, sep, profile = str(rule).rpartition("=")
        profile = profile.strip()
        if not sep or not pattern or profile not in VALID_PROFILES:
            raise ValueError(
                f"Expected a profile rule like '^db-=database', but got {rule!r}: write "
                f"REGEX=PROFILE with PROFILE one of {', '.join(VALID_PROFILES)}. "
                "See docs/PROMETHEUS.md#profiles."
            )
        try:
            out.append((re.compile(pattern), profile))
        except re.error as exc:
            raise ValueError(
                f"Profile rule {rule!r} has an invalid regex ({exc}). "
                "See docs/PROMETHEUS.md#profiles."
            ) from exc
    return tuple(out)


class ServerEncoder:
    """Maps server names to SHA-256 hash IDs and back, and persists the mapping.

    A collision (two different names, one ID) is an error, never silently merged.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._name_to_id: dict[str, str] = {}
        self._id_to_name: dict[str, str] = {}
        self.fit(names)

    def __len__(self) -> int:
        return len(self._name_to_id)

    def __contains__(self, name: object) -> bool:
        return name in self._name_to_id

    @property
    def names(self) -> list[str]:
        """Known server names, sorted."""
        return sorted(self._name_to_id)

    def fit(self, names: Iterable[str]) -> ServerEncoder:
        """Add names to the mapping; raises ContractError on a hash collision."""
        for name in names:
            if name in self._name_to_id:
                continue
            if not isinstance(name, str) or not name:
                raise ContractError(
                    f"Invalid server name {name!r}: expected a non-empty string.",
                    "server_name identifies a server in every table, model and alert.",
                    "Give every record the host name of its server.",
                    "docs/DATA_CONTRACT.md#server_name",
                )
            sid = server_id(name)
            other = self._id_to_name.get(sid)
            if other is not None:
                raise ContractError(
                    f"Server ID collision: {name!r} and {other!r} both hash to {sid}.",
                    "two servers sharing an ID would share one history and one forecast.",
                    f"Rename one of the two servers (for example {name!r} -> {name + '-1'!r}).",
                    "docs/DATA_CONTRACT.md#server-ids",
                )
            self._name_to_id[name] = sid
            self._id_to_name[sid] = name
        return self

    def encode(self, name: str) -> str:
        """The ID of a name; unknown names are hashed too (the ID does not depend on the fit)."""
        return self._name_to_id.get(name) or server_id(name)

    def decode(self, sid: str) -> str:
        """The name of an ID seen in :meth:`fit`; KeyError with a way out otherwise."""
        try:
            return self._id_to_name[sid]
        except KeyError:
            raise KeyError(
                f"Unknown server ID {sid!r}: it is not in this mapping of {len(self)} servers. "
                "Fix: decode with the server_mapping.json saved beside the model that produced "
                "the ID. See docs/DATA_CONTRACT.md#server-ids."
            ) from None

    def to_dict(self) -> dict[str, object]:
        """The JSON form of server_mapping.json."""
        return {
            "contract_version": CONTRACT_VERSION,
            "algorithm": _ALGORITHM,
            "servers": {name: self._name_to_id[name] for name in self.names},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ServerEncoder:
        """Rebuild from :meth:`to_dict`, verifying every stored ID against its name."""
        servers = data.get("servers")
        if not isinstance(servers, dict):
            raise ContractError(
                "server_mapping.json has no 'servers' object.",
                "without it forecasts cannot be decoded back to server names.",
                "Re-create the mapping with `fleetcast generate` or retrain the model.",
                "docs/DATA_CONTRACT.md#server-ids",
            )
        algorithm = data.get("algorithm", _ALGORITHM)
        if algorithm != _ALGORITHM:
            raise ContractError(
                f"server_mapping.json says its IDs are {algorithm!r}; fleetcast's are "
                f"{_ALGORITHM!r}.",
                "IDs made by another rule would not match the ones this version computes "
                "from server names, so forecasts could not be decoded.",
                "Regenerate server_mapping.json with this version of fleetcast "
                "(`fleetcast generate`, `fleetcast import`, or retrain).",
                "docs/DATA_CONTRACT.md#server-ids",
            )
        encoder = cls(servers)
        for name, sid in servers.items():
            if encoder.encode(name) != sid:
                raise ContractError(
                    f"server_mapping.json maps {name!r} to {sid!r}, but its SHA-256 ID is "
                    f"{encoder.encode(name)!r}.",
                    "a mapping that disagrees with the hash rule decodes forecasts to wrong servers.",
                    "Regenerate server_mapping.json with this version of fleetcast.",
                    "docs/DATA_CONTRACT.md#server-ids",
                )
        return encoder

    def save(self, path: str | Path) -> Path:
        """Write server_mapping.json (``path`` may be a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / MAPPING_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ServerEncoder:
        """Read server_mapping.json (``path`` may be the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / MAPPING_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{MAPPING_FILE} not found at {path}. It is required for decoding predictions "
                "to server names. Fix: retrain the model (fleetcast train) or regenerate the "
                "data (fleetcast generate), which write it. See docs/DATA_CONTRACT.md#server-ids."
            )
        return cls.from_dict(json.loads(path.read_text()))
