"""The appliance's setting converters (split from :mod:`fleetcast.appliance.settings`).

Each takes a flag value, an environment string or a TOML value and returns the setting's
value, or raises ValueError with a short reason; :func:`fleetcast.appliance.settings.
build_settings` names the setting, where it came from and the accepted form.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

_RATE_UNITS = ("second", "minute", "hour", "day")
"""Units of a rate limit ``N/UNIT``."""

# -- converters: each takes a flag value, an environment string or a TOML value and returns
# the field's value, or raises ValueError with a short reason (the caller names the setting,
# where it came from and the accepted form).


def _rate(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) == 2 and value[0] in _RATE_UNITS and _integer(value[1]) > 0:
            return str(value[0]), int(value[1])
        raise ValueError("not a (unit, count) pair")
    raw = str(value).strip().lower()
    if raw in {"off", "none", "0", ""}:
        return None
    count, _, unit = raw.partition("/")
    unit = unit or "minute"
    if unit not in _RATE_UNITS or not count.isdigit() or int(count) <= 0:
        raise ValueError("not N/UNIT")
    return unit, int(count)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("not a boolean")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        raise ValueError("not a whole number" if not value.is_integer() else "not an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("not an integer") from None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean, not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError("not a number") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _int_in(lo: int, hi: int | None = None, *, optional: bool = False) -> Callable[[Any], Any]:
    def convert(value: Any) -> int | None:
        if optional and (value is None or value == ""):
            return None
        number = _integer(value)
        if number < lo:
            raise ValueError(f"less than {lo}")
        if hi is not None and number > hi:
            raise ValueError(f"more than {hi}")
        return number

    return convert


def _float_in(lo: float, *, above: bool = False) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        number = _number(value)
        if number < lo or (above and number == lo):
            raise ValueError(f"not {'>' if above else '>='} {lo:g}")
        return number

    return convert


def _seconds_or_off(value: Any) -> float | None:
    """``off`` (or none, or empty) → None; else a finite number of seconds >= 0."""
    if value is None or str(value).strip().lower() in ("off", "none", ""):
        return None
    return _float_in(0.0)(value)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
"""Units of a duration ``N<unit>`` (``7d``, ``36h``, ``90m``, ``600s``, ``2w``)."""
_MIN_DURATION = 300.0
"""The shortest duration that forgets anything: one 5-minute step of data time."""


def _duration_or_off(value: Any) -> float | None:
    """``off`` (or none, empty, 0) → None; else a duration in seconds of at least one step:
    a number of seconds, or a number with a unit of :data:`_DURATION_UNITS`."""
    if value is None or str(value).strip().lower() in ("off", "none", ""):
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean, not a duration")
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:])
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            raise ValueError("not a duration") from None
    else:
        seconds = _number(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("not a duration >= 0")
    if seconds == 0:
        return None
    if seconds < _MIN_DURATION:
        raise ValueError(f"shorter than one {_MIN_DURATION:g}-second step")
    return seconds


def _text(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    return text


def _path(value: Any) -> Path:
    return Path(_text(value))


def _opt_path(value: Any) -> Path | None:
    return None if value is None or value == "" else Path(str(value))


def _opt_text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _query(value: Any) -> str | None:
    return None if value is None else str(value)


def _names(value: Any) -> tuple[str, ...]:
    items = str(value).split(",") if isinstance(value, str) else list(value)
    return tuple(str(p).strip() for p in items if str(p).strip())


def _proxies(value: Any) -> tuple[str, ...]:
    """Reverse proxies' addresses or networks (``10.0.0.0/8``), or ``*`` (any)."""
    import ipaddress

    names = _names(value)
    for name in names:
        if name == "*":
            continue
        try:  # a network as uvicorn reads it: host bits clear (10.0.0.0/8, not 10.0.0.1/8)
            ipaddress.ip_network(name) if "/" in name else ipaddress.ip_address(name)
        except ValueError:
            raise ValueError(f"{name!r} is not an IP address, a network or *") from None
    return names


def _opt_names(value: Any) -> tuple[str, ...] | None:
    return None if value is None else (_names(value) or None)


def _providers(value: Any) -> tuple[str, ...] | None:
    """Execution provider names ONNX Runtime knows (a misspelt one is refused here; a known
    one this build lacks, e.g. CUDA on a CPU wheel, is logged at start and skipped)."""
    names = None if value is None or value == "" else (_names(value) or None)
    if names:
        import onnxruntime as ort

        known = ort.get_all_providers()
        unknown = [n for n in names if n not in known]
        if unknown:
            gpu = ", ".join(p for p in known if p.startswith(("Tensorrt", "CUDA", "CPU")))
            raise ValueError(f"unknown provider {', '.join(map(repr, unknown))}; e.g. {gpu}")
    return names


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError("not a log level")
    return level


def _source(value: Any) -> str:
    from fleetcast.appliance.sources import SOURCE_KINDS

    kind = str(value).strip().lower()
    if kind not in SOURCE_KINDS:
        raise ValueError(f"not one of {', '.join(SOURCE_KINDS)}")
    return kind


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
