"""Training features: contract table → pandas frame → pytorch-forecasting TimeSeriesDataSet.

The feature design is decided in docs/MODEL_FORMAT.md#features; this module implements it
and is authoritative where it is more precise:

- group id: ``server_name`` with pytorch-forecasting's *default* encoder (never a custom one:
  a custom group-id encoder makes per-group normalizers look up the wrong row);
- static categoricals: ``profile`` and ``server_id`` (SHA-256 ID; a deterministic
  ``unknown_server_fraction`` of the training servers gets the null ID ``"nan"`` so the
  unknown-server embedding is trained), both ``NaNLabelEncoder(add_nan=True)``;
- time-varying known reals: ``hour_sin, hour_cos, dow_sin, dow_cos`` (unscaled, in [-1, 1]);
  with ``DatasetConfig.day_ago``, also ``<target>_day_ago``: the transformed metric one day
  (``86400 // step_seconds`` steps) before the row's step, forward-filled over gaps and, before
  the server's first step, its first value (:func:`day_ago_values`), standard-scaled like
  ``<target>_level``. Known because the prediction length (8 h) is shorter than a day;
- time-varying unknown categorical: ``state`` (null → the encoder's NaN class ``"nan"``,
  code 0);
- time-varying unknown reals and targets: the four metrics, contract order;
- static reals added by pytorch-forecasting: ``encoder_length`` and, with window input
  scaling, ``<target>_center``, ``<target>_scale`` (standard-scaled with scalers fitted here,
  see :func:`fit_scale_scalers`);
- input scaling of the metrics (``DatasetConfig.input_scaling``): ``"window"`` feeds the
  targets themselves, scaled like the output (relative to each window); ``"fixed"`` feeds
  ``<target>_level`` columns instead: the transformed metric standard-scaled with one global
  mean and std fitted on the training data, so a step's inputs do not depend on the window
  it sits in and the appliance can cache per-step work (docs/MODEL_FORMAT.md#step-cache);
- ``time_idx = timestamp_seconds // STEP_SECONDS``; no relative time index;
- target scaling relative to each window (:mod:`fleetcast.trainer.normalizer`).

Missing steps: ``allow_missing_timesteps=True``. Inside a window pytorch-forecasting fills a
gap by repeating the last observed step (forward fill of every column, targets included);
windows are only formed where at least ``min_encoder_length`` encoder steps and the full
prediction length fit in the server's time range.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fleetcast.contract.encoder import server_id as hash_server_id
from fleetcast.contract.schema import (
    DEFAULT_ENCODER_STEPS,
    DEFAULT_PREDICTION_STEPS,
    METRIC_COLUMNS,
    REQUIRED_COLUMNS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)
from fleetcast.trainer.normalizer import (
    DEFAULT_MIN_SCALE,
    TARGET_TRANSFORMS,
    build_multi_normalizer,
    forward_transform,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pytorch_forecasting import TimeSeriesDataSet
    from sklearn.preprocessing import StandardScaler

__all__ = [
    "CATEGORICAL_NAN",
    "DAY_AGO_SUFFIX",
    "GROUP_ID",
    "INPUT_SCALINGS",
    "KNOWN_REALS",
    "LEVEL_SUFFIX",
    "STATIC_CATEGORICALS",
    "TARGETS",
    "UNKNOWN_CATEGORICALS",
    "DatasetConfig",
    "build_dataset",
    "calendar_features",
    "dataset_parameters",
    "day_ago_at",
    "day_ago_values",
    "fit_scale_scalers",
    "prepare_frame",
    "scaler_from_stats",
    "scaler_stats",
    "unknown_id_servers",
]

GROUP_ID = "server_name"
TARGETS: tuple[str, ...] = METRIC_COLUMNS
STATIC_CATEGORICALS: tuple[str, ...] = ("profile", "server_id")
UNKNOWN_CATEGORICALS: tuple[str, ...] = ("state",)
KNOWN_REALS: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
LEVEL_SUFFIX = "_level"
"""``<target>_level``: the transformed metric, as fed to the model under fixed input scaling."""
DAY_AGO_SUFFIX = "_day_ago"
"""``<target>_day_ago``: the transformed metric one day before the step (a known real)."""
INPUT_SCALINGS: tuple[str, ...] = ("window", "fixed")
"""How the metrics are scaled as inputs (the output is always scaled relative to the window)."""

CATEGORICAL_NAN = "nan"
"""What a null categorical (state, server_id) becomes: NaNLabelEncoder's NaN class, code 0."""


@dataclass(frozen=True)
class DatasetConfig:
    """Every dataset parameter of the model; stored in the bundle's config.json."""

    max_encoder_length: int = DEFAULT_ENCODER_STEPS
    """Encoder (context) steps; 96 = 8 h."""
    min_encoder_length: int = 12
    """Shortest encoder a window may have (cold start); 12 = 1 h."""
    max_prediction_length: int = DEFAULT_PREDICTION_STEPS
    """Prediction steps; 96 = 8 h. Every window predicts all of them."""
    targets: tuple[str, ...] = TARGETS
    """Targets in tensor order (contract order)."""
    transforms: dict[str, str] = field(default_factory=lambda: dict(TARGET_TRANSFORMS))
    """Transform per target: identity or log1p (inverse expm1)."""
    min_scale: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_SCALE))
    """Floor of each target's window scale, in transformed units."""
    unknown_server_fraction: float = 0.1
    """Share of training servers whose server_id is set to null (trains the unknown embedding)."""
    step_seconds: int = STEP_SECONDS
    """Length of one step in seconds (the contract's)."""
    input_scaling: str = "fixed"
    """``"fixed"`` or ``"window"``: how the metrics are scaled as inputs (module docstring).
    A bundle that does not record it used ``window`` (:meth:`from_dict`)."""
    day_ago: bool = True
    """Feed each target's value one day before every step as a known real (module docstring).
    A bundle that does not record it had none (:meth:`from_dict`)."""

    def __post_init__(self) -> None:
        if self.input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"input_scaling must be one of {list(INPUT_SCALINGS)}, not "
                f"{self.input_scaling!r}. See docs/MODEL_FORMAT.md#features."
            )
        if self.day_ago and self.max_prediction_length > self.day_steps:
            raise ValueError(
                f"day_ago needs a prediction length of at most one day ({self.day_steps} "
                f"steps), not {self.max_prediction_length}: the last predicted step's value a "
                "day earlier would not be known yet. See docs/MODEL_FORMAT.md#features."
            )

    @property
    def day_steps(self) -> int:
        """Steps in one day (the lag of the ``_day_ago`` inputs)."""
        return 86400 // self.step_seconds

    @property
    def known_reals(self) -> tuple[str, ...]:
        """The time-varying known reals: the calendar, then the ``_day_ago`` columns if used."""
        if self.day_ago:
            return (*KNOWN_REALS, *(f"{t}{DAY_AGO_SUFFIX}" for t in self.targets))
        return KNOWN_REALS

    @property
    def input_reals(self) -> tuple[str, ...]:
        """The time-varying unknown reals: the targets, or their ``_level`` columns."""
        if self.input_scaling == "fixed":
            return tuple(f"{t}{LEVEL_SUFFIX}" for t in self.targets)
        return tuple(self.targets)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "max_encoder_length": self.max_encoder_length,
            "min_encoder_length": self.min_encoder_length,
            "max_prediction_length": self.max_prediction_length,
            "targets": list(self.targets),
            "transforms": dict(self.transforms),
            "min_scale": dict(self.min_scale),
            "unknown_server_fraction": self.unknown_server_fraction,
            "step_seconds": self.step_seconds,
            "input_scaling": self.input_scaling,
            "day_ago": self.day_ago,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            max_encoder_length=int(data["max_encoder_length"]),
            min_encoder_length=int(data["min_encoder_length"]),
            max_prediction_length=int(data["max_prediction_length"]),
            targets=tuple(data["targets"]),
            transforms=dict(data["transforms"]),
            min_scale={k: float(v) for k, v in data["min_scale"].items()},
            unknown_server_fraction=float(data["unknown_server_fraction"]),
            step_seconds=int(data["step_seconds"]),
            # Bundles written before input scaling was a choice scaled inputs per window.
            input_scaling=str(data.get("input_scaling", "window")),
            day_ago=bool(data.get("day_ago", False)),
        )


def calendar_features(time_idx: np.ndarray, step_seconds: int = STEP_SECONDS) -> np.ndarray:
    """Cyclical calendar features of step timestamps (UTC).

    ``time_idx``: (N,) int steps since the epoch. Returns (N, 4) float32 columns
    ``hour_sin, hour_cos, dow_sin, dow_cos`` with hour = seconds of day / 3600 and
    dow = Monday 0 … Sunday 6 plus the fraction of the day.
    """
    seconds = np.asarray(time_idx, dtype=np.int64) * int(step_seconds)
    sec_of_day = np.mod(seconds, 86400)
    hour = sec_of_day / 3600.0
    days = np.floor_divide(seconds, 86400)
    dow = np.mod(days + 3, 7) + sec_of_day / 86400.0  # 1970-01-01 was a Thursday (3)
    out = np.empty((len(seconds), 4), dtype=np.float32)
    out[:, 0] = np.sin(2 * math.pi * hour / 24.0)
    out[:, 1] = np.cos(2 * math.pi * hour / 24.0)
    out[:, 2] = np.sin(2 * math.pi * dow / 7.0)
    out[:, 3] = np.cos(2 * math.pi * dow / 7.0)
    return out


def unknown_id_servers(names: list[str] | np.ndarray, fraction: float) -> set[str]:
    """The deterministic ``round(fraction * n)`` servers whose server_id is nulled for training,
    at least one when ``fraction`` > 0 and there are two servers or more.

    Chosen by the smallest SHA-256 of ``"unknown:" + name``, so the choice does not depend on
    row order, process or machine. At least one: ``round(0.1 * n)`` is 0 for n ≤ 5, and the
    unknown-server embedding, which every new server is forecast from, then stayed the
    random vector it started as. One server alone keeps its own ID (nulling it would leave
    its known embedding untrained instead).
    """
    unique = sorted({str(n) for n in names})
    count = round(fraction * len(unique))
    if fraction > 0 and len(unique) >= 2:
        count = max(count, 1)
    if count <= 0:
        return set()
    ranked = sorted(unique, key=lambda n: hashlib.sha256(f"unknown:{n}".encode()).hexdigest())
    return set(ranked[:count])


def _to_pandas(data: pa.Table | pd.DataFrame | str | Path) -> pd.DataFrame:
    from fleetcast.contract.tables import normalized, read_contract_columns

    if isinstance(data, str | Path):
        data = read_contract_columns(data)
    if isinstance(data, pd.DataFrame):
        return data
    return normalized(data).to_pandas()


def prepare_frame(
    data: pa.Table | pd.DataFrame | str | Path,
    *,
    unknown_server_fraction: float = 0.0,
    step_seconds: int = STEP_SECONDS,
) -> pd.DataFrame:
    """A contract table (Arrow table, DataFrame or Parquet path) → the model's pandas frame.

    Adds ``time_idx`` (int64, steps since the epoch), the calendar features, the
    ``<target>_level`` columns (the transformed metrics, for fixed input scaling), the
    ``<target>_day_ago`` columns (:func:`day_ago_values`, for models with day-ago inputs),
    ``server_id``
    (null for :func:`unknown_id_servers` when ``unknown_server_fraction`` > 0: use 0.1 for
    training, 0 for prediction), maps null ``state`` to ``"nan"``; targets become float32.
    Rows are sorted by server and time; duplicate (server, step) rows keep the last one.
    The input is expected to be contract-valid (run the validator first).
    """
    df = _to_pandas(data)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"Expected the contract columns {list(REQUIRED_COLUMNS)}, but {missing} are missing. "
            "Fix: validate the data with `fleetcast validate`. See docs/DATA_CONTRACT.md#columns."
        )
    ts = pd.to_datetime(df["timestamp"], utc=True)
    seconds = ts.to_numpy(dtype="datetime64[s]").astype(np.int64)
    out = pd.DataFrame(
        {
            "server_name": df["server_name"].astype(str).to_numpy(),
            "time_idx": np.floor_divide(seconds, step_seconds).astype(np.int64),
        }
    )
    for col in METRIC_COLUMNS:
        out[col] = df[col].to_numpy(dtype=np.float32)
    state = df["state"].astype(object).where(df["state"].notna(), CATEGORICAL_NAN)
    out["state"] = state.astype(str).to_numpy()
    out["profile"] = df["profile"].astype(str).to_numpy()
    out = out.drop_duplicates(["server_name", "time_idx"], keep="last")
    out = out.sort_values(["server_name", "time_idx"], kind="stable").reset_index(drop=True)

    names = out["server_name"].unique()
    nulled = unknown_id_servers(names, unknown_server_fraction)
    id_map = {n: (CATEGORICAL_NAN if n in nulled else hash_server_id(n)) for n in names}
    out["server_id"] = out["server_name"].map(id_map)
    cal = calendar_features(out["time_idx"].to_numpy(), step_seconds)
    for i, name in enumerate(KNOWN_REALS):
        out[name] = cal[:, i]
    steps = out["time_idx"].to_numpy()
    names_sorted = out["server_name"].to_numpy()
    starts = np.flatnonzero(np.r_[True, names_sorted[1:] != names_sorted[:-1]])
    for col in METRIC_COLUMNS:
        # Used by models with fixed input scaling / day-ago inputs; others ignore the columns.
        level = forward_transform(TARGET_TRANSFORMS[col], out[col].to_numpy(dtype=np.float64))
        out[f"{col}{LEVEL_SUFFIX}"] = level.astype(np.float32)
        out[f"{col}{DAY_AGO_SUFFIX}"] = day_ago_values(
            steps, level, starts, 86400 // step_seconds
        ).astype(np.float32)
    for col in ("server_name", "state", "profile", "server_id"):
        out[col] = out[col].astype("category")
    return out


def day_ago_at(steps: np.ndarray, values: np.ndarray, at: np.ndarray, lag: int) -> np.ndarray:
    """One series' value ``lag`` steps before each of the steps ``at``.

    ``steps`` int [N] ascending, ``values`` [N]. The value at step ``a - lag`` is the last row
    at or before it (forward fill over gaps); before the first step, the first row's value.
    The contract's ``fleetcast.contract.features.day_ago_rows`` is the same rule.
    """
    found = np.searchsorted(steps, np.asarray(at) - lag, side="right") - 1
    return values[np.maximum(found, 0)]


def day_ago_values(
    steps: np.ndarray, values: np.ndarray, starts: np.ndarray, lag: int
) -> np.ndarray:
    """Every row's :func:`day_ago_at` value in its own series (docs/MODEL_FORMAT.md#features).

    ``steps`` int [N] sorted within each series, ``values`` [N], ``starts`` the first row of
    every series (ascending, ``starts[0] == 0``).
    """
    out = np.empty(len(values), dtype=np.float64)
    bounds = [*np.asarray(starts).tolist(), len(values)]
    for lo, hi in itertools.pairwise(bounds):
        out[lo:hi] = day_ago_at(steps[lo:hi], values[lo:hi], steps[lo:hi], lag)
    return out


def scaler_from_stats(name: str, mean: float, scale: float, n: int = 1) -> StandardScaler:
    """A fitted sklearn StandardScaler for one column, rebuilt from its statistics (no pickle)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_ = np.array([mean], dtype=np.float64)
    scaler.scale_ = np.array([scale], dtype=np.float64)
    scaler.var_ = np.array([scale * scale], dtype=np.float64)
    scaler.n_samples_seen_ = np.int64(n)
    scaler.n_features_in_ = 1
    # No feature_names_in_: pytorch-forecasting's __getitem__ passes unnamed arrays, and a
    # named fit would warn on every sample.
    return scaler


def scaler_stats(scaler: StandardScaler) -> dict[str, float]:
    """The JSON form of a one-column StandardScaler: ``{"mean", "scale"}``."""
    return {"mean": float(scaler.mean_[0]), "scale": float(scaler.scale_[0])}


def fit_scale_scalers(frame: pd.DataFrame, config: DatasetConfig) -> dict[str, StandardScaler]:
    """Scalers of the ``<target>_center`` / ``<target>_scale`` static reals (window input
    scaling) or of the ``<target>_level`` inputs (fixed input scaling).

    The level scaler is the mean and std of the transformed metric over the whole frame.

    pytorch-forecasting would fit them on one global pseudo-scale per series; here they
    are fitted on what the windows actually produce: the centre on every transformed value,
    the scale on the floored std of non-overlapping blocks of ``max_encoder_length`` steps
    of each server.
    """
    scalers: dict[str, StandardScaler] = {}
    block = frame["time_idx"].to_numpy() // max(config.max_encoder_length, 2)
    for target in config.targets:
        y = forward_transform(config.transforms[target], frame[target].to_numpy(dtype=np.float64))
        center_mean = float(np.mean(y))
        center_std = float(np.std(y)) or 1.0
        if config.day_ago:
            scalers[f"{target}{DAY_AGO_SUFFIX}"] = scaler_from_stats(
                f"{target}{DAY_AGO_SUFFIX}", center_mean, center_std, len(y)
            )
        if config.input_scaling == "fixed":
            scalers[f"{target}{LEVEL_SUFFIX}"] = scaler_from_stats(
                f"{target}{LEVEL_SUFFIX}", center_mean, center_std, len(y)
            )
            continue
        stds = (
            pd.DataFrame({"s": frame["server_name"].to_numpy(), "b": block, "y": y})
            .groupby(["s", "b"], observed=True)["y"]
            .std()
            .dropna()
            .to_numpy()
        )
        stds = np.maximum(stds, config.min_scale[target]) if len(stds) else np.array([1.0])
        scale_mean = float(np.mean(stds))
        scale_std = float(np.std(stds)) or 1.0
        scalers[f"{target}_center"] = scaler_from_stats(
            f"{target}_center", center_mean, center_std, len(y)
        )
        scalers[f"{target}_scale"] = scaler_from_stats(
            f"{target}_scale", scale_mean, scale_std, len(stds)
        )
    return scalers


def dataset_parameters(
    config: DatasetConfig,
    scalers: dict[str, StandardScaler],
    categorical_classes: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``TimeSeriesDataSet`` for this feature design.

    ``scalers``: the fitted ``<target>_center/_scale`` scalers (:func:`fit_scale_scalers`, or
    rebuilt from a bundle). ``categorical_classes``: classes in code order (``"nan"`` first)
    per categorical, when rebuilding for new data. ``profile`` and ``state`` default to the
    contract's full lists (every profile and state has an embedding, even if unseen);
    ``server_id`` is fitted on the data when not given.
    Use with ``TimeSeriesDataSet(frame, **params)``.
    """
    from pytorch_forecasting.data.encoders import NaNLabelEncoder

    fixed = {
        "profile": [CATEGORICAL_NAN, *sorted(VALID_PROFILES)],
        "state": [CATEGORICAL_NAN, *sorted(VALID_STATES)],
    }
    encoders = {}
    for name in (*STATIC_CATEGORICALS, *UNKNOWN_CATEGORICALS):
        enc = NaNLabelEncoder(add_nan=True, warn=False)
        classes = None
        if categorical_classes is not None and name in categorical_classes:
            classes = list(categorical_classes[name])
        elif name in fixed:
            classes = fixed[name]
        if classes is not None:
            if not classes or classes[0] != CATEGORICAL_NAN:
                raise ValueError(
                    f"Categorical classes of {name!r} must start with {CATEGORICAL_NAN!r} (code 0)."
                )
            enc.classes_ = {c: i for i, c in enumerate(classes)}
            enc.classes_vector_ = np.array(classes)
        encoders[name] = enc
    all_scalers: dict[str, Any] = {name: None for name in KNOWN_REALS}
    all_scalers.update(scalers)
    return {
        "time_idx": "time_idx",
        "target": list(config.targets),
        "group_ids": [GROUP_ID],
        "max_encoder_length": config.max_encoder_length,
        "min_encoder_length": config.min_encoder_length,
        "max_prediction_length": config.max_prediction_length,
        "min_prediction_length": config.max_prediction_length,
        "static_categoricals": list(STATIC_CATEGORICALS),
        "static_reals": [],
        "time_varying_known_categoricals": [],
        "time_varying_known_reals": list(config.known_reals),
        "time_varying_unknown_categoricals": list(UNKNOWN_CATEGORICALS),
        "time_varying_unknown_reals": list(config.input_reals),
        "target_normalizer": build_multi_normalizer(
            config.targets, config.transforms, config.min_scale
        ),
        "categorical_encoders": encoders,
        "scalers": all_scalers,
        "add_relative_time_idx": False,
        # Window-relative centre/scale as static reals would make every step's inputs depend
        # on its window: fixed input scaling leaves them out.
        "add_target_scales": config.input_scaling == "window",
        "add_encoder_length": True,
        "allow_missing_timesteps": True,
        "randomize_length": None,
    }


def build_dataset(
    frame: pd.DataFrame,
    config: DatasetConfig,
    *,
    scalers: dict[str, StandardScaler] | None = None,
    categorical_classes: dict[str, list[str]] | None = None,
    predict: bool = False,
    min_prediction_idx: int | None = None,
) -> TimeSeriesDataSet:
    """The TimeSeriesDataSet of a :func:`prepare_frame` frame.

    ``scalers``/``categorical_classes``: reuse fitted ones (validation data, a bundle);
    None fits them on ``frame``. ``predict=True``: one window per server, ending at its last
    row (the last ``max_prediction_length`` rows are the decoder). ``min_prediction_idx``:
    only windows whose first predicted step is at or after this ``time_idx``.
    """
    from pytorch_forecasting import TimeSeriesDataSet

    if scalers is None:
        scalers = fit_scale_scalers(frame, config)
    params = dataset_parameters(config, scalers, categorical_classes)
    if predict:
        params["predict_mode"] = True
    if min_prediction_idx is not None:
        params["min_prediction_idx"] = int(min_prediction_idx)
    return TimeSeriesDataSet(frame, **params)
