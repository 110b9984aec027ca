"""The layers ``build_settings`` merges: where each raw value came from, and the TOML file.

Split from :mod:`fleetcast.appliance.settings`. A layer maps setting names to
``(raw value, origin)``; :class:`_Origin` names the flag, environment variable, config file
key or ``$STATE_DIRECTORY`` a value came from, for messages. :func:`_read_toml` reads the
``--config`` file's layer (every key and TOML type checked against ``_SPECS``);
:func:`_api_key` picks the API key (or key file, read by :func:`_read_key_file`) from the
highest layer that gives one, warning when the key file is readable by other users. Nothing
here reads the environment (``build_settings`` passes ``$CREDENTIALS_DIRECTORY`` in).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetcast.appliance.settings_specs import (
    _FLAGS,
    _SECRET,
    _SPECS,
    _T_BOOL,
    _TOML_FORMS,
    ENV_PREFIX,
    SettingsError,
)
from fleetcast.contract.errors import explain

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Origin:
    """Where a raw value came from, to name it in messages."""

    kind: str
    """``flag``, ``env``, ``file`` or ``systemd`` (``$STATE_DIRECTORY``)."""
    path: Path | None = None
    key: str | None = None
    """The key as spelled in the config file."""

    def where(self, name: str) -> str:
        if self.kind == "flag":
            return _FLAGS.get(name, f"--{name.replace('_', '-')}")
        if self.kind == "env":
            return f"{ENV_PREFIX}{name.upper()}"
        if self.kind == "file":
            return f"{self.key or name} in {self.path}"
        return "STATE_DIRECTORY (systemd's StateDirectory=)"

    def shown(self, name: str, raw: Any) -> str:
        value: Any = "<hidden>" if name in _SECRET else raw
        if self.kind == "flag":
            return f"{self.where(name)} {value}"
        if self.kind == "env":
            return f"{ENV_PREFIX}{name.upper()}={value}"
        if self.kind == "file":
            shown = value if name in _SECRET else _toml_literal(value)
            return f"{self.key or name} = {shown} in {self.path}"
        return f"STATE_DIRECTORY={value}"


_Layer = dict[str, tuple[Any, _Origin]]


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for kind, word in ((int, "integer"), (float, "float"), (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return word
    return "table" if isinstance(value, dict) else "date/time"


def _toml_literal(value: Any) -> str:
    """``value`` as it would be written in TOML (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _toml_fits(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, list):
        return list in kinds and all(isinstance(item, str) for item in value)
    if isinstance(value, int):
        return int in kinds
    return isinstance(value, (float, str)) and type(value) in kinds


def _toml_error(path: Path, what: str, fix: str) -> SettingsError:
    return SettingsError(f"The config file {path} {what}", fix)


def _suggest(word: str, names: Any) -> str:
    close = difflib.get_close_matches(word.replace("-", "_"), list(names), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_toml(path: Path) -> _Layer:
    """The settings of ``path``: its ``[serve]`` table, or its top level when it has none.

    Anything else — another table, a nested table, an unknown key, a value of the wrong TOML
    type — is a SettingsError naming the file and the key (nothing is dropped silently).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SettingsError(
            f"Cannot read the config file {path} ({type(exc).__name__}: {reason}).",
            "create it, or point --config / FLEETCAST_CONFIG at the file that holds the settings."
            if isinstance(exc, FileNotFoundError)
            else "fix the TOML syntax or point --config / FLEETCAST_CONFIG at another file.",
        ) from exc
    where = "[serve]"
    if "serve" in data:
        table = data["serve"]
        if not isinstance(table, dict):
            raise _toml_error(
                path,
                f"sets serve = {table!r}, but serve must be a table.",
                "write the settings as key = value lines under a [serve] header.",
            )
        for key, value in data.items():
            if key == "serve":
                continue
            kind = f"a table [{key}]" if isinstance(value, dict) else f"a key {key!r}"
            raise _toml_error(
                path,
                f"has {kind} outside [serve]; fleetcast serve reads only the [serve] table.",
                f"move {key} into [serve] if it is a setting, otherwise remove it.",
            )
    else:
        table, where = data, "the top level"
    layer: _Layer = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if isinstance(value, dict) and where == "[serve]":
            raise _toml_error(
                path,
                f"has a table [serve.{key}], which fleetcast serve does not read.",
                f"remove [serve.{key}]: every setting is a plain key = value line under "
                "[serve]; risk thresholds go in their own file, named by thresholds_file "
                "(docs/OPERATIONS.md#risk).",
            )
        if isinstance(value, dict):
            hint = " (did you mean [serve]?)" if _suggest(key, ["serve"]) else ""
            raise _toml_error(
                path,
                f"has a table [{key}]{hint}, which fleetcast serve does not read.",
                f"put the settings under a table named exactly [serve] (or as top-level keys "
                f"of a file without tables), and remove or rename [{key}].",
            )
        spec = _SPECS.get(name)
        if spec is None:
            raise _toml_error(
                path,
                f"has an unknown key {key!r} in {where}{_suggest(key, _SPECS)}.",
                f"use only the documented names: {', '.join(_SPECS)}.",
            )
        if name in layer:
            raise _toml_error(
                path,
                f"sets {name} twice (as {layer[name][1].key!r} and {key!r}).",
                "keep one of the two lines.",
            )
        if not _toml_fits(value, spec.toml):
            shown = "<hidden>" if name in _SECRET else _toml_literal(value)
            form = "" if spec.toml == _T_BOOL else f" ({spec.form})"
            fix = (
                f"{key} = {spec.example}" if spec.example else f"{key} as {_TOML_FORMS[spec.toml]}"
            )
            raise _toml_error(
                path,
                f"sets {key} = {shown} (a TOML {_toml_type(value)}), but {key} takes "
                f"{_TOML_FORMS[spec.toml]}.",
                f"write {fix}{form}.",
            )
        layer[name] = (value, _Origin("file", path, str(key)))
    return layer


def _api_key(
    layers: list[_Layer], credentials_dir: str | None = None
) -> tuple[Any, _Origin, str] | None:
    """The key from the highest layer that gives one, as a key or a key file (both in one
    layer is refused, at every level). Removes ``api_key``/``api_key_file`` from every
    layer. An empty value counts as not given. ``credentials_dir`` is systemd's
    ``$CREDENTIALS_DIRECTORY`` (a key file under it is private already). Returns (key,
    origin, setting name)."""
    chosen: tuple[Any, _Origin, str] | None = None
    for layer in reversed(layers):  # highest precedence first
        given = {
            name: layer.pop(name)
            for name in ("api_key", "api_key_file")
            if name in layer and layer[name][0] not in (None, "")
        }
        for name in ("api_key", "api_key_file"):
            layer.pop(name, None)
        if len(given) == 2:
            raise SettingsError(
                f"Both {given['api_key'][1].where('api_key')} and "
                f"{given['api_key_file'][1].where('api_key_file')} give the API key, at the "
                "same level of precedence.",
                "give the key once: keep the key file (a key on the command line is visible "
                "in ps) and drop the other.",
                see="docs/OPERATIONS.md#api-key",
            )
        if chosen is not None or not given:
            continue
        if "api_key_file" in given:
            raw, origin = given["api_key_file"]
            key = _read_key_file(
                Path(str(raw)), origin.where("api_key_file"), credentials_dir=credentials_dir
            )
            chosen = (key, origin, "api_key_file")
        else:
            chosen = (*given["api_key"], "api_key")
    return chosen


def _read_key_file(path: Path, where: str, *, credentials_dir: str | None = None) -> str:
    """The key in ``path`` (surrounding whitespace stripped). Logs a WARNING when group or
    other users may read the file, unless it lies under ``credentials_dir`` (systemd's
    ``$CREDENTIALS_DIRECTORY``, private to the service)."""
    try:
        with path.open("rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            key = fh.read().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SettingsError(
            f"Cannot read the API key file {path} (from {where}): {reason}.",
            "check the path and that the user running fleetcast may read the file (under "
            "systemd: LoadCredential= and FLEETCAST_API_KEY_FILE=%d/api-key).",
            see="docs/OPERATIONS.md#api-key",
        ) from exc
    if not key:
        raise SettingsError(
            f"The API key file {path} (from {where}) is empty.",
            "write the key into it (one line).",
            see="docs/OPERATIONS.md#api-key",
        )
    if mode & (stat.S_IRGRP | stat.S_IROTH) and not _under(path, credentials_dir):
        readers = " and ".join(
            who
            for who, bit in (("its group", stat.S_IRGRP), ("every user", stat.S_IROTH))
            if mode & bit
        )
        _log.warning(
            explain(
                f"The API key file {path} (from {where}) has mode {mode:04o}: {readers} "
                "may read it.",
                "whoever reads the key can send samples, switch models and read forecasts "
                "as if they were a trusted client.",
                f"chmod 600 {path} (owned by the user running fleetcast; under systemd "
                "root-owned, passed with LoadCredential=).",
                "docs/OPERATIONS.md#api-key",
            )
        )
    return key


def _under(path: Path, directory: str | None) -> bool:
    """Whether ``path`` lies in ``directory`` (both resolved; False without a directory)."""
    if not directory:
        return False
    try:
        return path.resolve().is_relative_to(Path(directory).resolve())
    except OSError:
        return False
