"""``dragon-lightning serve``: a trained model behind HTTP, on LitServe, with dynamic batching.

``POST /predict`` takes ``{"dragons": [{"numberToes": 7, "bodyLength": 150.0}, ...]}`` (``predict``'s
units) and answers, per row, ``predicted``, one ``p_<class>`` per class and
``outside_training_range``: the numbers ``load_model(...).predict_proba`` gives. ``GET /health`` and
``GET /info`` (task, classes, features, threshold, training range, the model file and its SHA-256,
the version). A checkpoint is loaded through the checkpoint gate; an ONNX file from ``export`` runs in
onnxruntime, without PyTorch's training code. Each request is validated alone (``serve_api``); a bad
one is a 4xx with one message naming the row and field, and the server goes on serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeFloat, NotEmptyStr, PositiveFloat, PositiveInt

from dragon_lightning import __version__
from dragon_lightning.arguments import Port, parse_options
from dragon_lightning.checkpoints.files import read_checkpoint, resolve_shortcut
from dragon_lightning.errors import DragonInputError, os_reason
from dragon_lightning.gates.inputs import read_onnx
from dragon_lightning.schema import FEATURE_COLUMNS

SERVE_EXTRA = "pip install 'dragon-lightning[serve]'"
API_KEY_VARIABLE = "DRAGON_LIGHTNING_API_KEY"
# The addresses LitServe listens on (it refuses others when the server starts, as a traceback).
Host = Literal["127.0.0.1", "0.0.0.0", "::"]


def build_server(options: ServeOptions, api_key: str | None):
    """The LitServer for a checkpoint (``--ckpt_path``) or an ONNX file (``--model``), its model checked
    here before any worker starts."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from dragon_lightning.predictors import checkpoint_predictor, onnx_predictor
    from dragon_lightning.serve_api import (
        APIKeyMiddleware,
        BatchFromFirstRequest,
        DragonAPI,
        DragonServer,
        HTTPProcessSetup,
        PredictRequest,
        one_line_422,
        one_line_http_error,
    )

    onnx = options.model is not None
    source = options.model if onnx else options.ckpt_path
    assert source is not None  # serve_command refused options naming neither
    # Read once: the model checked here, the checksum /info gives and every worker's model are these bytes,
    # whatever the file holds later (a running fit rewrites last.ckpt every epoch).
    data = read_onnx(source, "--model") if onnx else read_checkpoint(source)
    predictor = onnx_predictor(source, data) if onnx else checkpoint_predictor(source, data)  # refuse a bad file before serving
    metadata = {
        "task": predictor.task,
        "class_names": predictor.class_names,
        "feature_names": list(FEATURE_COLUMNS),
        "feature_units": {"numberToes": "toes", "bodyLength": "body length, as predict takes it"},
        "threshold": predictor.threshold,
        "training_range": {"min": predictor.feature_min.tolist(), "max": predictor.feature_max.tolist()},
        "model_file": Path(source).name,
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "dragon_lightning": __version__,
    }
    PredictRequest.max_rows = options.max_rows
    batching = {"loop": BatchFromFirstRequest()} if options.max_batch_size > 1 else {}
    api = DragonAPI(source, onnx, data, max_batch_size=options.max_batch_size, batch_timeout=options.batch_timeout, **batching)
    server = DragonServer(
        api,
        accelerator="cpu",
        workers_per_device=options.workers_per_device,
        timeout=options.timeout,
        model_metadata=metadata,
        max_payload_size=options.max_body_bytes,
        middlewares=[HTTPProcessSetup, *([(APIKeyMiddleware, {"key": api_key})] if api_key else [])],
    )
    server.app.add_exception_handler(RequestValidationError, one_line_422)
    server.app.add_exception_handler(HTTPException, one_line_http_error)
    return server


@dataclass(frozen=True)
class ServeOptions:
    """serve's options

    Args:
        ckpt_path: the checkpoint to serve (best: the one the newest run under ./lightning_logs tested;
            last: its last.ckpt)
        model: or an ONNX file from dragon-lightning export (onnxruntime)
        host: address to listen on (0.0.0.0 or ::, every interface)
        port: port to listen on
        max_batch_size: requests answered together by one model call (1: no batching)
        batch_timeout: seconds to wait for a batch to fill
        workers_per_device: model processes
        num_api_servers: HTTP server processes (more than one helps when the server has cores to spare)
        api_key: require this key in the X-API-Key header (or set DRAGON_LIGHTNING_API_KEY, which keeps
            it out of ps)
        timeout: seconds a request may wait for its answer
        max_rows: most dragons in one request
        max_body_bytes: largest request body
    """

    ckpt_path: str | None = None
    model: str | None = None
    host: Host = "127.0.0.1"
    port: Port = 8000
    max_batch_size: PositiveInt = 64
    batch_timeout: NonNegativeFloat = 0.005
    workers_per_device: PositiveInt = 1
    num_api_servers: PositiveInt = 1
    api_key: NotEmptyStr | None = None
    timeout: PositiveFloat = 30.0
    max_rows: PositiveInt = 10_000
    max_body_bytes: PositiveInt = 2**20


def serve_command(args: list[str]) -> None:
    options = parse_options(
        ServeOptions,
        args,
        prog="dragon-lightning serve",
        description='Serve a trained model over HTTP with LitServe: POST /predict with {"dragons": [{"numberToes": 7, '
        '"bodyLength": 150.0}, ...]} answers per row predicted, p_<class> and outside_training_range; GET /health, GET /info. '
        f"Needs {SERVE_EXTRA}.",
    )
    if (options.ckpt_path is None) == (options.model is None):
        raise DragonInputError("serve needs one of --ckpt_path (a checkpoint) or --model (an ONNX file)")
    options = dataclasses.replace(options, ckpt_path=options.ckpt_path and resolve_shortcut(options.ckpt_path))
    check_port_free(options.host, options.port)
    api_key = options.api_key or os.environ.get(API_KEY_VARIABLE)
    if api_key is not None and not api_key.strip():
        raise DragonInputError(f"{API_KEY_VARIABLE} is set but empty: set a key, or unset it to serve without one")
    try:
        import litserve  # noqa: F401
    except ImportError:
        raise DragonInputError(f"serve needs LitServe: {SERVE_EXTRA}") from None
    from dragon_lightning.serve_api import end_with_the_server

    server = build_server(options, api_key)
    address = f"http://{'[::]' if options.host == '::' else options.host}:{options.port}"
    print(
        f"dragon-lightning serve: {options.model or options.ckpt_path} at {address} (POST /predict, GET /info, GET /docs)"
        + ("; every request but GET /health needs the key in the X-API-Key header" if api_key else ""),
        flush=True,
    )
    # Ctrl-C and SIGTERM (to this process, or to its whole group as a terminal or systemd sends them): LitServe
    # finishes what is in flight; the processes it starts leave the stopping to it (see Stop and DragonAPI.setup).
    stop = Stop(os.getpid(), server.uvicorn_graceful_timeout)
    server.while_starting_a_worker = stop.held
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    # Every process LitServe forks from here on (its queue manager too, which nothing else would end) ends with the server.
    os.register_at_fork(after_in_child=end_with_the_server)
    # A second Ctrl-C, or a helper process that ended first, while LitServe was already stopping.
    with contextlib.suppress(KeyboardInterrupt, ConnectionError, EOFError):
        try:
            server.run(
                host=options.host,
                port=options.port,
                num_api_servers=options.num_api_servers,
                generate_client_file=False,
                log_level="warning",
            )
        finally:
            _end_unstarted_workers()
    print("dragon-lightning serve: stopped", flush=True)


def _end_unstarted_workers() -> None:
    """A stop while the model workers still start reaches LitServe before its shutdown is in place (it
    waits for them first): they would finish loading, find the queue manager gone and print a traceback
    while Python waits for them at exit. End them here; after a normal stop none is left."""
    for process in multiprocessing.active_children():
        process.terminate()
        process.join(timeout=5)


def check_port_free(host: str, port: int) -> None:
    """Bind the address once, as the server will, before loading anything: a port in use is one line."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise DragonInputError(f"--port {port}: {os_reason(error)} on {host}; choose another --port") from None


class Stop:
    """Ctrl-C or SIGTERM in the server's own process: stop, once (a second signal would interrupt
    LitServe's shutdown half-way and leave its workers to die on a closed queue; SIGKILL still ends it
    at once). In a process it forked, which inherits the handler (its queue manager; its HTTP servers
    once they have finished): nothing, LitServe ends them in order once the requests in flight are answered."""

    def __init__(self, server_pid: int, grace: float) -> None:
        self.server_pid, self.grace = server_pid, grace
        self.holding = self.asked = False

    def __call__(self, signum, frame) -> None:
        if os.getpid() != self.server_pid:
            return
        for stopping in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stopping, signal.SIG_IGN)
        print(
            f"dragon-lightning serve: stopping; new connections are refused, requests in flight have up to {self.grace:g} s to finish",
            flush=True,
        )
        self.asked = True
        if not self.holding:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The stop waits while a model worker is handed what it starts from (the model's bytes among
        them): interrupted, the worker would read half of it and print a traceback."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.asked:
            raise KeyboardInterrupt
