"""The FastAPI application of ``seq2seq serve``: one POST route per head, the model list,
the health check, the web page, and every error as ``{"error": "<field>: <message>"}``.

Routes come from the head table (``seq2seq.heads``): head ``h`` is served at
``POST /v1/<h.command>`` by ``h.service``, whose ``Request`` is the body's schema.
"""

# No ``from __future__ import annotations`` here: FastAPI reads each route's body type from
# its annotation at run time, and the per-head routes are made in a loop.

import asyncio
import dataclasses
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import UserError
from ..heads import HEADS, Head
from .models import ServedModel
from .schemas import Limits, RequestError, _Body

STATIC = Path(__file__).parent / "static"
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's, for a body it cannot decode
log = logging.getLogger("seq2seq.serve")


def create_app(models: dict[str, ServedModel], limits: Limits,
               api_key: str | None = None) -> FastAPI:
    """The application serving ``models`` (by name); ``api_key`` guards every /v1/ route."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for served in models.values():
            served.batcher.start()
        yield
        for served in models.values():  # after the server has finished every request
            await served.batcher.stop()

    # docs_url=None: FastAPI's own /docs loads its scripts from a CDN; ours works offline
    app = FastAPI(title="seq2seq serve", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, redirect_slashes=False,
                  description="Translate, classify and generate with trained seq2seq runs. "
                  "Errors are JSON: {\"error\": \"<field>: <message>\"}.")
    app.add_middleware(Gate, api_key=api_key, max_body=limits.max_body_bytes)
    _add_error_handlers(app)

    @app.api_route("/healthz", methods=["GET", "HEAD"],
                   summary="Liveness: always open, even with an API key")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": list(models)}

    @app.get("/v1/models", summary="The served models: head, labels or languages, size, training")
    async def list_models() -> dict[str, Any]:
        return {"models": [served.describe() for served in models.values()],
                "limits": dataclasses.asdict(limits)}

    for head in HEADS.values():
        _add_head_route(app, head, models)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_head_route(app: FastAPI, head: Head, models: dict[str, ServedModel]) -> None:
    async def endpoint(body: _Body) -> Any:
        served = pick_model(models, head, body.model)
        if getattr(body, "stream", False):
            return stream(served, body)
        job = served.service.prepare(body)
        outputs = await served.batcher.submit(job)
        return served.service.respond(body, outputs)

    # FastAPI reads the body's schema from this annotation: the head's own request type (a
    # _Body), which a type checker cannot take from a variable.
    endpoint.__annotations__["body"] = head.load("service").Request
    app.add_api_route(f"/v1/{head.command}", endpoint, methods=["POST"], name=head.command,
                      summary=head.description)


def pick_model(models: dict[str, ServedModel], head: Head, name: str | None) -> ServedModel:
    """The model ``name``, which must be of ``head``; None: the only model of that head."""
    if name is None:
        candidates = [m for m in models.values() if m.head is head]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise RequestError("model", f"no {head.model} is served here", status=404)
        raise RequestError("model", f"{len(candidates)} {head.model}s are served: name "
                           f"one ({', '.join(m.name for m in candidates)})")
    if name not in models:
        raise RequestError("model", f"unknown model {name!r} (served: {', '.join(models)})",
                           status=404)
    served = models[name]
    if served.head is not head:
        raise RequestError("model", f"{name!r} is a {served.head.model}: use "
                           f"POST /v1/{served.head.command}")
    return served


class _ClientGone(Exception):
    """Raised in the worker by the token callback of a stream nobody reads any more."""


def stream(served: ServedModel, body: Any) -> StreamingResponse:
    """Server-Sent Events: ``token`` ({"sample", "text"}) as produced, then ``done`` (the
    whole answer, as without streaming) or ``error`` ({"error": ...})."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gone = threading.Event()

    def on_token(sample: int, text: str) -> None:  # on the worker thread
        if gone.is_set():
            raise _ClientGone()
        loop.call_soon_threadsafe(queue.put_nowait, {"sample": sample, "text": text})

    job = served.service.prepare(body, on_token)  # a bad request fails before the stream
    running = asyncio.ensure_future(served.batcher.submit(job))

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                yield sse("token", getter.result())
            while not queue.empty():
                yield sse("token", queue.get_nowait())
            try:
                outputs = running.result()
            except (RequestError, UserError) as err:
                yield sse("error", {"error": str(err)})
            except Exception:
                log.exception("generation failed")
                yield sse("error", {"error": "internal error (see the server's log)"})
            else:
                yield sse("done", served.service.respond(body, outputs))
        finally:  # the client went away, or all is sent: a generation still running stops
            gone.set()
            running.add_done_callback(_consume)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _consume(task: asyncio.Future[Any]) -> None:
    """Read a finished task's outcome, so an unread error is not logged as never retrieved."""
    if not task.cancelled():
        task.exception()


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


# ---- errors ----------------------------------------------------------------------------

def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": message} if field is None else {"error": message, "field": field}
    return JSONResponse(body, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(err.status, str(err), err.field)

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return error_response(422, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if not content_type.split(";")[0].strip().lower().endswith("json"):
            return error_response(415, f"body: sent as {content_type or 'no Content-Type'}; "
                                  "send JSON with Content-Type: application/json", "body")
        status, message, field = describe_validation_error(err.errors()[0])
        return error_response(status, message, field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 400 and err.detail == BODY_PARSE_ERROR:
            return error_response(400, "body: not JSON that can be read (invalid UTF-8, or "
                                  "nested too deeply)", "body")
        field = "body" if str(err.detail).startswith("body: ") else None
        response = error_response(err.status_code, str(err.detail), field)
        response.headers.update(getattr(err, "headers", None) or {})
        return response

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return error_response(500, "internal error (see the server's log)")


def describe_validation_error(error: dict[str, Any]) -> tuple[int, str, str]:
    """One of pydantic's errors -> (status, "<field>: <message>", field)."""
    loc = [part for part in error.get("loc", ()) if part != "body"]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    kind = error.get("type", "")
    if kind == "json_invalid":
        return 400, f"body: malformed JSON ({error.get('ctx', {}).get('error', 'not JSON')})", "body"
    if field == "body":
        return 400, "body: expected a JSON object", "body"
    if kind == "extra_forbidden":
        return 422, f"{field}: unknown field", field
    if kind == "missing":
        return 422, f"{field}: required", field
    return 422, f"{field}: {error.get('msg', 'invalid')}", field


class Gate:
    """ASGI middleware: the API key on /v1/ routes (constant-time compare) and the body limit."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"].startswith("/v1/"):
            given = headers.get(b"x-api-key", b"")
            bearer = headers.get(b"authorization", b"")
            if bearer[:7].lower() == b"bearer ":
                given = bearer[7:].strip()
            if not hmac.compare_digest(given, self.key):
                response = error_response(401, "api_key: missing or wrong (send the header "
                                          "X-API-Key: KEY or Authorization: Bearer KEY)",
                                          "api_key")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await error_response(400, "body: bad Content-Length", "body")(scope, receive, send)
                return
            if int(length) > self.max_body:
                await error_response(413, f"body: {int(length)} bytes; at most "
                                     f"{self.max_body}", "body")(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                # HTTPException: FastAPI turns any other error while reading the body into 400
                raise HTTPException(413, f"body: more than {self.max_body} bytes")
            return message

        await self.app(scope, counted, send)
