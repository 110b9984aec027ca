"""POST /admin/reload (atomic model swap) and POST /demo/scenario (only with --demo).

Both take JSON only: a body of another type, or one without a Content-Type, is a 415 (a
web page could post those cross-site, docs/OPERATIONS.md#cross-site-requests); a bodyless
reload needs none. A body nested too deeply to decode is a 400, like a misspelt field.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar import Controller, Response, post
from litestar.exceptions import ValidationException

from fleetcast.appliance.auth import write_guard
from fleetcast.appliance.http_errors import API_DOC, JSON_TYPE, ApiError, body_type_guard
from fleetcast.appliance.schemas import ErrorBody, ReloadIn, ReloadOut, ScenarioIn, ScenarioOut

if TYPE_CHECKING:
    from pathlib import Path

    from litestar import Request
    from litestar.datastructures import State

    from fleetcast.appliance.settings import Settings

__all__ = ["AdminController", "DemoController", "resolve_model_dir"]

_log = logging.getLogger(__name__)
_SEE_RELOAD = "docs/OPERATIONS.md#upgrade-a-model"


def resolve_model_dir(settings: Settings, name: str | None) -> Path:
    """``--model-dir`` itself, or the folder ``name`` beside it (inside its parent only).

    Raises ApiError(422) for names that leave the models folder or do not exist; the
    message quotes the name sent (its first 100 characters), never a server path.
    """
    if not name:
        return settings.model_dir
    shown = repr(name[:100]) + ("…" if len(name) > 100 else "")
    root = settings.model_dir.parent.resolve()
    bad_name = "\x00" in name or "/" in name.strip("/") or name in {".", ".."}
    candidate = root if bad_name else (root / name).resolve()  # NUL: resolve() raises
    if bad_name or candidate.parent != root:
        raise ApiError(
            422,
            "model_dir not allowed",
            f"{shown} is not the name of a folder beside the configured model folder",
            "pass the bare folder name of a bundle next to the current one, e.g. tft_model_20261127_101500",
            _SEE_RELOAD,
        )
    try:
        found = (candidate / "model.onnx").is_file()
    except OSError:  # e.g. a name longer than the file system allows
        found = False
    if not found:
        raise ApiError(
            422,
            "no model there",
            f"folder {shown} beside the configured model folder holds no model.onnx",
            "export the bundle first (fleetcast export) or check the folder name",
            _SEE_RELOAD,
        )
    return candidate


_JSON_ONLY = body_type_guard(JSON_TYPE)
"""415 for a body that is not JSON (after the key check: 401 first)."""


def _bad_body(error: str, fix: str, see: str) -> Any:
    """An exception handler answering a body that does not decode (unknown or misspelt
    field, wrong type) with a 400 that says which field and what the body may hold.

    Also for RecursionError: msgspec raises it for a body nested deeper than it decodes
    (``{"model_dir": [[[...]]]}``), and it was a 500 with a traceback in the log."""

    def handler(
        request: Request[Any, Any, Any], exc: ValidationException | RecursionError
    ) -> Response[ErrorBody]:
        if isinstance(exc, RecursionError):
            found = "arrays or objects nested too deeply"
        else:
            extra = exc.extra if isinstance(exc.extra, list) else []
            found = "; ".join(
                str(item.get("message", item)) if isinstance(item, dict) else str(item)
                for item in extra
            ) or str(exc.detail)
        detail = f"the body of {request.method} {request.url.path} does not decode: {found}"
        return Response(
            ErrorBody(error=error, detail=detail, fix=fix, see=see),
            status_code=400,
            media_type="application/json",
        )

    return handler


_BAD_RELOAD = _bad_body(
    "bad reload request",
    'send no body (or {}) to reload --model-dir, or {"model_dir": "<folder name>"} for '
    "a folder beside it; model_dir is the only field, so a misspelt one is refused "
    "rather than silently reloading --model-dir",
    API_DOC,
)
_BAD_SCENARIO = _bad_body(
    "bad scenario request",
    'send {"scenario": "healthy" | "degrading" | "critical"} and no other field',
    "docs/OPERATIONS.md#demo",
)


def _scrub(message: str, *paths: Path) -> str:
    """Remove server paths from a message before it is sent to a client."""
    for path in paths:
        for form in {str(path.resolve()), str(path)}:
            if form and form != ".":
                message = message.replace(form, f"<{path.name}>")
    return message


class AdminController(Controller):
    """Operations on the running appliance."""

    path = "/admin"
    guards = [write_guard]  # noqa: RUF012
    tags = ["admin"]  # noqa: RUF012
    exception_handlers = {ValidationException: _BAD_RELOAD, RecursionError: _BAD_RELOAD}  # noqa: RUF012

    @post("/reload", status_code=200, guards=[_JSON_ONLY], summary="Atomically swap in a new model")
    async def reload(self, state: State, data: ReloadIn | None = None) -> ReloadOut:
        """Loads and checks the new model in a worker thread while the old one keeps serving;
        buffers carry over. 422 (old model stays) when the new one is refused."""
        runtime = state.runtime
        target = resolve_model_dir(runtime.settings, data.model_dir if data else None)
        try:
            result = await runtime.reload(target)
        except ApiError:
            raise
        except Exception as exc:
            _log.warning("model reload refused: %s", exc)
            raise ApiError(
                422,
                "model refused",
                _scrub(f"{type(exc).__name__}: {exc}", target, runtime.settings.model_dir),
                "fix or re-export the model; the previous model keeps serving",
                _SEE_RELOAD,
            ) from exc
        _log.info(
            "model reloaded: %s -> %s", result["previous_model_version"], result["model_version"]
        )
        return ReloadOut(**result)


class DemoController(Controller):
    """The built-in demo source (404 unless started with --demo)."""

    path = "/demo"
    guards = [write_guard]  # noqa: RUF012
    tags = ["demo"]  # noqa: RUF012
    exception_handlers = {ValidationException: _BAD_SCENARIO, RecursionError: _BAD_SCENARIO}  # noqa: RUF012

    @post(
        "/scenario",
        status_code=200,
        guards=[_JSON_ONLY],
        summary="Switch the demo fleet's scenario",
    )
    async def scenario(self, state: State, data: ScenarioIn) -> ScenarioOut:
        """``healthy``, ``degrading`` or ``critical``; affects the simulated data from the next step."""
        demo = state.runtime.demo
        if demo is None:
            raise ApiError(
                404,
                "demo not running",
                "the appliance was started without --demo, so there is no scenario to switch",
                "restart with `fleetcast serve --demo` to use the simulator",
                "docs/OPERATIONS.md#demo",
            )
        previous = demo.scenario
        demo.set_scenario(data.scenario)
        return ScenarioOut(scenario=data.scenario, previous=previous)
