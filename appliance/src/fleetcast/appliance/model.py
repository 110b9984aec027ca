"""Load ``model.onnx``, check it, and run it: one latency-tuned ONNX Runtime session.

How it runs — providers, session options, workers, batch size — is decided in
:mod:`fleetcast.appliance.execution` (re-exported here); :class:`LoadedModel` runs a
fleet's calls on that many worker threads.

:func:`load_model` reads everything from the file's ``metadata_props``
(:class:`fleetcast.contract.features.ModelSpec`) and refuses, with a :class:`ModelError`
saying what, why, how to fix and where to read more, a model that:

- cannot be opened by ONNX Runtime, or lacks/malforms a metadata key;
- was trained under another contract **major** version, or whose states/profiles/step
  disagree with this contract (``validate_model_compatibility``);
- has inputs/outputs other than docs/MODEL_FORMAT.md#onnx-graph, or targets in another
  order than the contract's;
- does not match its ``model.onnx.sha256`` sidecar (``sha256sum`` format, written by the
  exporter; a missing sidecar is logged, not refused), sits beside a ``model.safetensors``
  whose SHA-256 is not the ``weights_sha256`` it was exported from, or beside a
  ``server_mapping.json`` that disagrees with the embedded mapping.

The session is created from the very bytes that were hashed.

Execution providers: TensorRT → CUDA → CPU filtered by ``onnxruntime.get_available_providers()``
(or the configured list); the providers the session actually uses are logged and exposed,
and a fallback from a requested GPU provider to CPU is logged as a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.errors import ExplainedError
from fleetcast.appliance.execution import (
    GPU_PROVIDERS,
    MAX_CPU_WORKERS,
    PREFERRED_PROVIDERS,
    choose_providers,
    default_batch_size,
    plan_workers,
    session_options,
    usable_cores,
)
from fleetcast.appliance.model_facts import (
    known_servers,
    unknown_server_trained,
    untrained_profiles,
)
from fleetcast.contract.model_spec import INPUT_NAMES, OUTPUT_NAME
from fleetcast.contract.schema import CONTRACT_VERSION, METRIC_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    import onnxruntime as ort

    from fleetcast.appliance.windows import WindowPlan
    from fleetcast.contract.features import ModelSpec

__all__ = [
    "GPU_PROVIDERS",
    "MAX_CPU_WORKERS",
    "MODEL_FILE",
    "PREFERRED_PROVIDERS",
    "LoadedModel",
    "ModelError",
    "choose_providers",
    "default_batch_size",
    "load_model",
    "plan_workers",
    "untrained_profiles",
    "usable_cores",
]

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.safetensors"
MAPPING_FILE = "server_mapping.json"
SIDECAR_SUFFIX = ".sha256"
FORMAT_DOC = "docs/MODEL_FORMAT.md#onnx-graph"
REEXPORT = "Re-export the model with this version of fleetcast (`fleetcast export --bundle DIR`)."


class ModelError(ExplainedError):
    """A model the appliance refuses to serve. The message says what, why, how to fix, where."""


@dataclass
class LoadedModel:
    """A checked model: its spec, the kernel plan, and the one reused ORT session."""

    path: Path
    spec: ModelSpec
    plan: WindowPlan
    session: ort.InferenceSession
    providers: list[str]
    """Providers the session actually uses, in priority order."""
    requested_providers: list[str]
    load_seconds: float
    workers: int = 1
    """Concurrent ``session.run`` calls of :meth:`run_all` (see the module docstring)."""
    steps: dict[str, ort.InferenceSession] | None = None
    """The step graphs' sessions (``encoder_steps``, ``decoder_steps``, ``head_pre``,
    ``head_post``) when the model has them and runs on CPU (docs/MODEL_FORMAT.md#step-cache);
    None otherwise."""
    embedding_size: int = 0
    """``H`` of the step graphs (0 without them)."""
    _pool: Any = field(default=None, repr=False)

    @property
    def profiles_untrained(self) -> tuple[str, ...] | None:
        """See :func:`untrained_profiles`."""
        return untrained_profiles(self.spec)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph: feed (docs/MODEL_FORMAT.md inputs, batch B) → quantiles (B, T, D, Q)."""
        return self.session.run([OUTPUT_NAME], feed)[0]

    def map(self, func: Callable[[Any], np.ndarray], items: Sequence[Any]) -> list[np.ndarray]:
        """``func`` over ``items``, ``workers`` at a time; results in input order.

        ONNX Runtime and the Numba kernels release the GIL and a session may run
        concurrently, so each worker thread computes its own batch on its own core.
        """
        if self.workers <= 1 or len(items) <= 1:
            return [func(item) for item in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fleetcast-ort")
        return list(self._pool.map(func, items))

    def bounds(
        self, windows: int, batch_size: int | None = None, *, step_cache: bool = False
    ) -> list[tuple[int, int]]:
        """``windows`` in batches of ``batch_size`` (None: :func:`default_batch_size` for
        these providers, for the full graph or the step cache's head)."""
        step = batch_size or default_batch_size(self.providers, step_cache=step_cache)
        return [(lo, min(lo + step, windows)) for lo in range(0, windows, step)]

    def run_all(self, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """:meth:`run` over several batches, ``workers`` at a time; results in input order."""
        return self.map(self.run, feeds)

    def run_steps(self, feeds: Sequence[tuple[str, dict[str, np.ndarray]]]) -> list[np.ndarray]:
        """Each ``(which, feed)`` through the ``"encoder"`` or ``"decoder"`` step graph
        (rows → (m, H)), ``workers`` at a time; results in input order."""
        steps = self.steps
        if steps is None:
            raise RuntimeError("this model has no step graphs")
        return self.map(lambda item: steps[f"{item[0]}_steps"].run(None, item[1])[0], feeds)

    def close(self) -> None:
        """Stop the worker threads (idempotent; :meth:`run_all` starts them again if called)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def info(self) -> dict[str, Any]:
        """Model facts for /status (no file paths)."""
        spec = self.spec
        untrained = self.profiles_untrained
        return {
            "version": spec.model_version,
            "bundle_id": spec.bundle_id,
            "contract_version": spec.contract_version,
            "providers": list(self.providers),
            "step_seconds": spec.step_seconds,
            "encoder_length": spec.encoder_length,
            "min_encoder_length": spec.min_encoder_length,
            "day_ago_lag": spec.max_lag,
            "prediction_length": spec.prediction_length,
            "quantiles": list(spec.quantiles),
            "horizons": dict(sorted(spec.horizons.items(), key=lambda kv: kv[1])),
            "known_servers": known_servers(spec),
            "inference_workers": self.workers,
            "step_graphs": self.steps is not None,
            "weights_sha256": spec.weights_sha256,
            "profiles_untrained": None if untrained is None else list(untrained),
            "unknown_server_trained": unknown_server_trained(spec),
        }


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def load_model(
    model_dir: str | Path,
    providers: Sequence[str] | None = None,
    intra_op_threads: int = 0,
    step_cache: bool = True,
) -> LoadedModel:
    """Open, check and warm the model in ``model_dir`` (or a path to the .onnx file itself).

    ``step_cache``: also open the model's step graphs when it has them and the session runs
    on CPU (docs/MODEL_FORMAT.md#step-cache).
    """
    import onnxruntime as ort

    from fleetcast.appliance.windows import plan_from_spec
    from fleetcast.contract.errors import ContractError
    from fleetcast.contract.features import ModelSpec

    started = time.perf_counter()
    path = Path(model_dir)
    model_path = path if path.suffix == ".onnx" else path / MODEL_FILE
    folder = model_path.parent
    if not model_path.is_file():
        missing = "does not exist" if not folder.exists() else f"holds no {MODEL_FILE}"
        raise ModelError(
            # The whole path, as given: a misspelt absolute path is found by reading it
            # (/admin/reload replaces server paths in what it answers).
            f"The model directory {str(folder)!r} {missing}.",
            "the appliance serves forecasts from an exported ONNX model only.",
            "Export one (`fleetcast export --bundle models/latest`) or point --model-dir "
            "(FLEETCAST_MODEL_DIR, model_dir in the config file) at a folder that holds it.",
            FORMAT_DOC,
        )
    data = model_path.read_bytes()
    _check_sidecar(model_path, data)
    requested = choose_providers(providers, ort.get_available_providers())
    workers, threads = plan_workers(requested, intra_op_threads)
    try:
        session = ort.InferenceSession(
            data, sess_options=session_options(threads), providers=requested
        )
    except Exception as exc:  # ORT raises several private exception types
        raise ModelError(
            f"ONNX Runtime cannot open {MODEL_FILE}: {type(exc).__name__}: {str(exc)[:300]}",
            "a file ONNX Runtime cannot load cannot produce forecasts.",
            REEXPORT,
            FORMAT_DOC,
        ) from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    try:
        spec = ModelSpec.from_metadata(metadata)
    except ContractError as exc:
        raise ModelError(exc.what, exc.why, exc.fix, exc.see) from None
    _check_spec(spec, metadata)
    _check_graph(session, spec)
    _check_beside(folder, spec)
    try:
        plan = plan_from_spec(spec)
    except ContractError as exc:
        raise ModelError(exc.what, exc.why, exc.fix, exc.see) from None
    in_use = list(session.get_providers())
    steps, embedding_size = None, 0
    if step_cache and in_use[0] == "CPUExecutionProvider":
        from fleetcast.appliance.step_cache import open_step_graphs

        steps, embedding_size = open_step_graphs(metadata, session_options(threads))
    log.info(
        "model %s (%s) loaded; providers in use: %s (asked for and in this build: %s); "
        "%d inference worker(s); "
        "step cache %s",
        spec.model_version,
        spec.bundle_id,
        ", ".join(in_use),
        ", ".join(requested),
        workers,
        "on" if steps is not None else "off",
    )
    untrained = untrained_profiles(spec)
    if untrained:
        log.warning(
            "the model has no trained embedding for the profile(s) %s: no server of them was "
            "in its training data, so servers of these profiles are forecast from an "
            "untrained profile (their own recent data still feeds the model; /servers marks "
            "them profile_trained false). Retrain with servers of every profile the fleet has "
            "(docs/SERVER_PROFILES.md)",
            ", ".join(untrained),
        )
    if unknown_server_trained(spec) is False:
        log.warning(
            "the model's unknown-server embedding was never trained (its training data had "
            "one server, whose own ID it kept): every server not in its training data "
            '(GET /servers "known": false) is forecast from an untrained embedding. '
            "Retrain on two servers or more (docs/DATA_CONTRACT.md#unknown-servers)"
        )
    if requested[0] != "CPUExecutionProvider" and in_use[0] == "CPUExecutionProvider":
        log.warning(
            "ONNX Runtime fell back to CPU although %s was requested; check the CUDA/TensorRT "
            "libraries (docs/OPERATIONS.md#gpu)",
            requested[0],
        )
    return LoadedModel(
        path=model_path,
        spec=spec,
        plan=plan,
        session=session,
        providers=in_use,
        requested_providers=requested,
        load_seconds=time.perf_counter() - started,
        workers=workers,
        steps=steps,
        embedding_size=embedding_size,
    )


def _check_sidecar(model_path: Path, data: bytes) -> None:
    """Verify ``model.onnx.sha256`` (``<hex>  model.onnx``) when it exists."""
    sidecar = model_path.with_name(model_path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        log.warning(
            "no %s beside %s: the file's integrity cannot be verified (the exporter writes one)",
            sidecar.name,
            model_path.name,
        )
        return
    words = sidecar.read_text().split()
    expected = words[0].lower() if words else ""
    actual = hashlib.sha256(data).hexdigest()
    if expected != actual:
        raise ModelError(
            f"{model_path.name} has SHA-256 {actual[:16]}…, but {sidecar.name} says "
            f"{expected[:16] or '(empty)'}….",
            "the file is not the one the exporter wrote and checked (truncated copy, "
            "corruption or a mix of two exports); its forecasts are not the parity-checked "
            "model's.",
            "Copy model.onnx and model.onnx.sha256 again from the same export, or re-export "
            "(`fleetcast export --bundle DIR`).",
            "docs/MODEL_FORMAT.md#onnx-graph",
        )


def _check_spec(spec: ModelSpec, metadata: dict[str, str]) -> None:
    """Contract version, targets and validate_model_compatibility (horizons and quantiles:
    ``ModelSpec.validate``, run by ``from_metadata``)."""
    from fleetcast.contract.validate import validate_model_compatibility

    if _major(spec.contract_version) != _major(CONTRACT_VERSION):
        raise ModelError(
            f"The model was trained under data contract {spec.contract_version}, but this "
            f"appliance implements contract {CONTRACT_VERSION} (major versions differ).",
            "a different major version means other columns, states or profiles: inputs "
            "would be encoded wrongly.",
            "Retrain and re-export the model with this fleetcast version, or install the "
            "fleetcast version the model was built with.",
            "docs/DATA_CONTRACT.md#versioning",
        )
    plain = {k.removeprefix("fleetcast."): v for k, v in metadata.items()}
    try:
        report = validate_model_compatibility(plain, None)
    except Exception as exc:  # a checker bug must not hide the model's problem
        raise ModelError(
            f"The model's metadata could not be checked against the contract ({exc}).",
            "an unchecked model may encode inputs wrongly.",
            REEXPORT,
            "docs/DATA_CONTRACT.md#versioning",
        ) from None
    if not report.is_compatible:
        raise ModelError(
            "The model is incompatible with this data contract: " + " | ".join(report.errors),
            "its inputs would not mean what the model learned.",
            REEXPORT,
            "docs/DATA_CONTRACT.md#versioning",
        )
    if tuple(spec.targets) != METRIC_COLUMNS:
        raise ModelError(
            f"Expected the model's targets to be {list(METRIC_COLUMNS)} (contract order), but "
            f"they are {list(spec.targets)}.",
            "the appliance maps output rows to metrics in contract order.",
            REEXPORT,
            FORMAT_DOC,
        )


def _check_graph(session: ort.InferenceSession, spec: ModelSpec) -> None:
    """Input/output names, ranks and the fixed dimensions of docs/MODEL_FORMAT.md#onnx-graph."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing or OUTPUT_NAME not in outputs:
        raise ModelError(
            f"Expected graph inputs {list(INPUT_NAMES)} and output {OUTPUT_NAME!r}, but the "
            f"model has inputs {sorted(inputs)} and outputs {outputs}.",
            "the appliance feeds these tensors by name.",
            REEXPORT,
            FORMAT_DOC,
        )
    e, d = spec.encoder_length, spec.prediction_length
    expect = {
        "encoder_cat": (e, len(spec.x_categoricals)),
        "encoder_cont": (e, len(spec.x_reals)),
        "decoder_cat": (d, len(spec.x_categoricals)),
        "decoder_cont": (d, len(spec.x_reals)),
        "target_scale": (spec.n_targets, 2),
    }
    for name, dims in expect.items():
        shape = inputs[name].shape
        fixed = tuple(shape[1:])
        if len(shape) != 3 or any(
            isinstance(a, int) and a != b for a, b in zip(fixed, dims, strict=True)
        ):
            raise ModelError(
                f"Expected input {name} of shape [B, {dims[0]}, {dims[1]}] from the metadata, "
                f"but the graph declares {shape}.",
                "the graph and its metadata disagree, so inputs built from the metadata would "
                "not fit.",
                REEXPORT,
                FORMAT_DOC,
            )


def _check_beside(folder: Path, spec: ModelSpec) -> None:
    """Weights hash (when model.safetensors is beside) and server_mapping.json agreement."""
    weights = folder / WEIGHTS_FILE
    digest = hashlib.sha256()
    try:
        with weights.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except PermissionError:
        # Bundles from before the trainer wrote it by the umask have it 0600: copied as root,
        # it is unreadable to the service user. The model is model.onnx; this is a cross-check.
        log.warning(
            "cannot read %s beside the model (permission denied): the ONNX file's agreement "
            "with the bundle's weights is not checked. Fix: make it readable (chmod a+r) or "
            "leave it out (the appliance needs model.onnx, its .sha256 and %s). See %s.",
            WEIGHTS_FILE,
            MAPPING_FILE,
            "docs/EXPORT.md#integrity",
        )
    except (FileNotFoundError, IsADirectoryError):
        pass
    else:
        if digest.hexdigest() != spec.weights_sha256:
            raise ModelError(
                f"{WEIGHTS_FILE} beside the model has SHA-256 {digest.hexdigest()[:16]}…, but "
                f"the model was exported from weights {spec.weights_sha256[:16]}….",
                "the ONNX file and the bundle beside it are not the same model; forecasts "
                "and the bundle's reported accuracy would not match.",
                "Re-export the bundle (`fleetcast export --bundle DIR`) so both come from "
                "one training run.",
                "docs/EXPORT.md#integrity",
            )
    mapping_path = folder / MAPPING_FILE
    if mapping_path.is_file():
        try:
            data = json.loads(mapping_path.read_text())
        except ValueError as exc:
            raise ModelError(
                f"{MAPPING_FILE} beside the model is not valid JSON ({exc}).",
                "the mapping decodes forecasts to server names.",
                "Restore the file from the model bundle or delete it (the model embeds one).",
                "docs/DATA_CONTRACT.md#server-ids",
            ) from None
        servers = data.get("servers", data) if isinstance(data, dict) else None
        if not isinstance(servers, dict) or servers != spec.server_mapping:
            given = servers if isinstance(servers, dict) else {}
            only_file = sorted(set(given) - set(spec.server_mapping))[:5]
            only_model = sorted(set(spec.server_mapping) - set(given))[:5]
            changed = sorted(
                k
                for k in set(given) & set(spec.server_mapping)
                if given[k] != spec.server_mapping[k]
            )[:5]
            raise ModelError(
                f"{MAPPING_FILE} beside the model disagrees with the mapping embedded in it "
                f"(only in the file: {only_file}, only in the model: {only_model}, different "
                f"IDs: {changed}).",
                "the two were made by different training runs; server names could be decoded "
                "wrongly.",
                "Use the server_mapping.json of the bundle the model was exported from, or "
                "delete the file (the model embeds its mapping).",
                "docs/DATA_CONTRACT.md#server-ids",
            )
