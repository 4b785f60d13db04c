"""The LitAPI of ``dragon-lightning serve`` (needs the ``serve`` extra): each request validated alone by
its pydantic model in the HTTP process, before it can join a batch; a batch answered with one model call.

A bad request is a 422 (400 for a body that is not JSON, 401 without the key) whose ``detail`` is one
line naming the row and field, quoting at most a short, escaped prefix of what was sent: nothing of one
request reaches another's answer, and nothing a client sends can turn an answer into a 500.
"""

import asyncio
import contextlib
import ctypes
import hmac
import itertools
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import litserve
import numpy as np
from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from litserve.loops import BatchedLoop
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dragon_lightning.predictors import checkpoint_predictor, onnx_predictor
from dragon_lightning.schema import FEATURE_COLUMNS, FLOAT32_MAX

QUOTED_CHARACTERS = 40
"""The most of a client's value a message quotes."""

# A JSON number (not a string or a boolean), finite and within float32: what the models compute in.
Feature = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


class Dragon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    numberToes: Feature
    bodyLength: Feature


class PredictRequest(BaseModel):
    """``{"dragons": [{"numberToes": 7, "bodyLength": 150.0}, ...]}``: at least one dragon, at most
    :attr:`max_rows`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_rows: ClassVar[int] = 10_000
    """Set by the server from ``--max_rows`` before LitServe forks its HTTP processes."""
    dragons: Annotated[list[Dragon], Field(min_length=1)]

    @field_validator("dragons", mode="before")
    @classmethod
    def _bounded(cls, rows: Any) -> Any:
        """Counted before any row is validated."""
        if isinstance(rows, list) and len(rows) > cls.max_rows:
            raise PydanticCustomError(
                "too_many_rows",
                "{rows} rows, more than the {limit} one request may hold",
                {"rows": f"{len(rows):,}", "limit": f"{cls.max_rows:,}"},
            )
        return rows

    def features(self) -> np.ndarray:
        return np.array([[row.numberToes, row.bodyLength] for row in self.dragons], dtype=np.float32)


def quote(value: Any) -> str:
    """A short, printable description of a client's value: a number or the start of a string
    (escaped, so a lone surrogate cannot break the answer's encoding), else its JSON kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= QUOTED_CHARACTERS else f"a number of {len(text)} digits"
    if isinstance(value, str):
        cut = value[:QUOTED_CHARACTERS]
        return ascii(cut) if cut == value else f"{ascii(cut)[:-1]}...'"
    return {list: "a list", dict: "an object", type(None): "null"}.get(type(value), "a value")


def describe(error: dict) -> str:
    """One pydantic error of a request, as this project words a table's: ``dragons: row 3, column
    'numberToes': 'seven' is not a number``."""
    kind, where, given = error["type"], list(error["loc"]), error.get("input")
    if where[:1] == ["body"]:
        where = where[1:]
    if kind == "json_invalid":
        return f"{NOT_JSON} ({error.get('ctx', {}).get('error', 'unreadable')})"
    if not where or where[0] != "dragons" or (kind == "extra_forbidden" and len(where) == 1):
        return 'expected a JSON object {"dragons": [{"numberToes": ..., "bodyLength": ...}, ...]}'
    if len(where) == 1:
        if kind == "too_many_rows":
            return f"dragons: {error['msg']}"
        return "dragons: expected a non-empty list of dragons"
    row = f"dragons: row {where[1]}"
    if len(where) == 2:
        return f"{row}: expected an object with numberToes and bodyLength"
    name = where[2]
    if kind == "extra_forbidden" or name not in FEATURE_COLUMNS:
        return f"{row}: unexpected field {quote(str(name))}"
    cell = f"{row}, column '{name}'"
    if kind == "missing":
        return f"{cell}: missing"
    if kind == "finite_number":
        return f"{cell}: {quote(given)} is not a finite number"
    too_large = kind in ("less_than_equal", "greater_than_equal") or (isinstance(given, int) and not isinstance(given, bool))
    if too_large:
        return f"{cell}: {quote(given)} is too large (the models compute in float32, up to {FLOAT32_MAX:.3g})"
    return f"{cell}: {quote(given)} is not a number"


NOT_JSON = "the body is not JSON text in UTF-8, or nests too deep"


async def one_line_422(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's validation error (a list that echoes the input) as the project's one line. FastAPI
    reads the body as JSON only under a JSON media type, and ``curl -d`` sends a form's unless told
    otherwise: that request is told the header it lacks (415), not that its JSON is wrong."""
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    media = request.headers.get("content-type", "")
    if problems and list(problems[0]["loc"]) == ["body"] and not _json_media(media):
        return JSONResponse(
            {"detail": f"send the body as JSON with the header Content-Type: application/json, not {quote(media)}"},
            status_code=415,
        )
    status = 400 if problems and problems[0]["type"] == "json_invalid" else 422
    return JSONResponse({"detail": describe(problems[0]) if problems else "invalid request"}, status_code=status)


def _json_media(media: str) -> bool:
    """A media type FastAPI parses as JSON: ``application/json`` or ``application/...+json``."""
    kind = media.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def one_line_http_error(request: Request, error: Exception) -> Response:
    """FastAPI answers a body its JSON parser cannot read (bytes that are not UTF-8, nesting beyond
    the parser's depth) with a 400 of its own, the only 400 this server gives: say what it means."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        return JSONResponse({"detail": NOT_JSON}, status_code=400)
    return await http_exception_handler(request, error)


def leave_stopping_to_the_server() -> None:
    """In each process LitServe starts (model workers, HTTP servers): a process group of its own, so that
    Ctrl-C or systemd's SIGTERM to the server's group reach the server alone, which stops this process
    once the requests in flight are answered (instead of it ending mid-request); and, on Linux, ended
    by the kernel should the server itself die."""
    os.setpgid(0, 0)
    end_with_the_server()


def end_with_the_server() -> None:
    """On Linux, the kernel ends this process (SIGKILL) when the one that started it dies: the server,
    killed itself with SIGKILL, leaves nothing behind."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1


def refuse_new_connections_when_stopped() -> None:
    """In an HTTP server process: when LitServe stops it (SIGTERM), first take the listening socket out of
    the event loop and shut it down, then let uvicorn finish the requests in flight. The socket is shared
    with the processes LitServe forked it to (the server, its queue manager), which keep it open: closing
    this process's copy, as uvicorn does, would leave the port accepting connections no one answers."""
    uvicorn_stops = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame) -> None:
        loop = asyncio.get_event_loop()
        for descriptor in _listening_descriptors():
            loop.remove_reader(descriptor)
            with socket.socket(fileno=os.dup(descriptor)) as listener:
                listener.shutdown(socket.SHUT_RD)  # on Linux: out of the listening state, new connections refused
        if callable(uvicorn_stops):
            uvicorn_stops(signum, frame)

    signal.signal(signal.SIGTERM, stop)


def _listening_descriptors() -> list[int]:
    """This process's listening sockets (Linux's /proc names the descriptors; elsewhere none is found,
    and new connections wait while the server stops, as before)."""
    found = []
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                with socket.socket(fileno=os.dup(int(name))) as copy:
                    if copy.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                        found.append(int(name))
        except OSError:  # closed meanwhile
            continue
    return found


class HTTPProcessSetup:
    """ASGI middleware that prepares an HTTP server process as it starts (its lifespan, before any
    request): :func:`leave_stopping_to_the_server` and :func:`refuse_new_connections_when_stopped`."""

    def __init__(self, app) -> None:
        self.app, self.ready = app, False

    async def __call__(self, scope, receive, send) -> None:
        if not self.ready:
            leave_stopping_to_the_server()
            refuse_new_connections_when_stopped()
            self.ready = True
        await self.app(scope, receive, send)


class APIKeyMiddleware:
    """Refuses a request without the server's key in ``X-API-Key`` (401) before its body is read,
    comparing in constant time; ``/health`` stays open for probes."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope["headers"]).get(b"x-api-key", b"")
            if not hmac.compare_digest(given, self.key):
                await JSONResponse({"detail": "missing or wrong X-API-Key"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class DragonServer(litserve.LitServer):
    """LitServer, with a hook around the start of its model workers, in the server's main thread
    (``serve`` holds a stop back there). LitServe's restarts of a dead worker, which ``serve`` does not
    enable, would run in its monitoring thread, where a signal handler's state means nothing."""

    while_starting_a_worker: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext

    def launch_inference_worker(self, lit_api: litserve.LitAPI) -> list:
        with self.while_starting_a_worker():
            return super().launch_inference_worker(lit_api)


class WithFirstRequest:
    """A request queue whose next ``get`` gives back a request already taken from it."""

    def __init__(self, queue: Any, first: Any) -> None:
        self.queue, self.taken = queue, [first]

    def get(self, timeout: float | None = None) -> Any:
        return self.taken.pop() if self.taken else self.queue.get(timeout=timeout)

    def get_nowait(self) -> Any:
        return self.taken.pop() if self.taken else self.queue.get_nowait()


class BatchFromFirstRequest(BatchedLoop):
    """LitServe's batched loop, waiting for the first request without polling: LitServe's own asks the
    queue (through its manager process) every millisecond while it is empty, which kept an idle server
    busy on a tenth of a core. The batch then fills from that request on, for up to ``batch_timeout``."""

    def get_batch_requests(self, lit_api: litserve.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        first = request_queue.get()
        return super().get_batch_requests(lit_api, WithFirstRequest(request_queue, first), transport)


class DragonAPI(litserve.LitAPI):
    """Loads the model in each worker; requests arrive validated (:class:`PredictRequest`)."""

    def __init__(self, source: str, onnx: bool, data: bytes, **kwargs) -> None:
        """``data``: the model file's bytes as the server read and checked them (each worker gets a copy)."""
        super().__init__(**kwargs)
        self.source, self.onnx, self.data = source, onnx, data

    def setup(self, device) -> None:
        leave_stopping_to_the_server()
        # One thread per model worker: a request's rows are few, so a second thread buys nothing, and between
        # calls it spins (PyTorch's OpenMP, onnxruntime's pool) on cores the HTTP processes need; more
        # workers (--workers_per_device) are what scales.
        load = onnx_predictor if self.onnx else checkpoint_predictor
        self.predictor = load(self.source, self.data, threads=1)

    def decode_request(self, request: PredictRequest) -> np.ndarray:
        return request.features()

    def batch(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        return np.concatenate(inputs), [len(rows) for rows in inputs]

    def predict(self, features) -> Any:
        if isinstance(features, tuple):  # a batch of requests: all their rows in one model call
            rows, sizes = features
            answers = self.predictor.answer(rows)
            bounds = np.cumsum([0, *sizes])
            return [answers[start:end] for start, end in itertools.pairwise(bounds)]
        return self.predictor.answer(features)

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: list[dict]) -> dict:
        return {"predictions": output}
