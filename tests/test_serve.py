"""``dragon-lightning serve``: a real server process on a free loopback port, real HTTP."""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clihelpers import expect_one_line_error, files_under, last_checkpoint, run, short_fit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres import free_port

from dragon_lightning import load_model
from dragon_lightning.errors import DragonInputError

pytest.importorskip("litserve")
KEY = "key-for-tests"


def post(url: str, body, key: str | None = None, timeout: float = 60, content_type: str = "application/json") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type, **({"X-API-Key": key} if key else {})}
    request = urllib.request.Request(f"{url}/predict", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def start_server(*args: str, environment: dict | None = None) -> tuple[str, subprocess.Popen]:
    """The server in a process (and process group) of its own, once it answers ``/health``."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dragon_lightning", "serve", *args, "--port", str(port)],
        env={**os.environ, **(environment or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # as under a terminal or systemd: a group of its own, which a test can signal whole
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/health", headers={"X-API-Key": KEY}), timeout=1).read()
            return url, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the server did not answer /health: {process.communicate()[1][-3000:]}") from None
            time.sleep(0.3)


@contextmanager
def server(*args: str, environment: dict | None = None):
    """:func:`start_server`, stopped with SIGTERM, which must end it with status 0 and no traceback."""
    url, process = start_server(*args, environment=environment)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert f" at {url} (POST /predict" in out, "the server says where it listens"
        keyed = "--api_key" in args or bool((environment or {}).get("DRAGON_LIGHTNING_API_KEY"))
        assert ("needs the key in the X-API-Key header" in out) == keyed, "and whether requests need a key"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    found = {}
    for task, name in (("color", "color_mlp.yaml"), ("fire", "fire_logistic.yaml")):
        cli = short_fit(
            name,
            2,
            "--test_after_fit",
            "false",
            "--figures.enabled",
            "false",
            "--trainer.default_root_dir",
            str(root / task),
            "--data.data_dir",
            "null",
        )
        found[task] = last_checkpoint(cli)
    run("export", "--ckpt_path", str(found["color"]), "--output", str(root / "color.onnx"))
    found["onnx"] = root / "color.onnx"
    return found


def probe_rows(model) -> list[dict]:
    """The edges of the training range, points far outside it, and a few ordinary dragons."""
    low, high = model.feature_range
    width = high - low
    points = [low, high, low - 2 * width, high + 2 * width, (low + high) / 2, [6, 170.0], [22, 250.0], [0, 0.0]]
    return [{"numberToes": float(p[0]), "bodyLength": float(p[1])} for p in points]


@pytest.mark.parametrize(
    "source, settings",
    [("checkpoint", None), ("onnx", None), ("fire", []), ("onnx", ["--num_api_servers", "2", "--max_batch_size", "1"])],
    ids=["color, with a key", "onnx", "fire", "onnx, two HTTP processes, no batching"],
)
def test_answers_equal_load_model(source, settings, servers, checkpoints):
    """``settings``: the options of a server of the case's own; ``None`` asks the module's server for its source."""
    path = checkpoints["color" if source == "checkpoint" else source]
    model = load_model(checkpoints["fire" if source == "fire" else "color"])
    if settings is None:
        url, key = servers[source]
        serving = nullcontext((url, None))
    else:
        key = None
        serving = server("--model" if source == "onnx" else "--ckpt_path", str(path), *settings)
    with serving as (url, _):
        rows = probe_rows(model)
        status, answer = post(url, {"dragons": rows}, key=key)
        assert status == 200, answer
        expected = model.predict_proba(pd.DataFrame(rows))
        got = pd.DataFrame(answer["predictions"])
        np.testing.assert_allclose(got[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-6)
        assert got["predicted"].tolist() == list(model.predict(pd.DataFrame(rows)))
        assert got["outside_training_range"].tolist() == list(model.outside_training_range(pd.DataFrame(rows)))
        assert got["outside_training_range"].tolist()[2:4] == [True, True]
        info = json.loads(urllib.request.urlopen(urllib.request.Request(f"{url}/info", headers={"X-API-Key": KEY})).read())[
            "model"
        ]
        assert info["class_names"] == list(model.classes_) and info["task"] == model.task
        assert info["model_sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if key:
            assert post(url, {"dragons": rows})[0] == 401, "no key: refused"
            assert post(url, {"dragons": rows}, key="wrong")[0] == 401


BAD_REQUESTS = {
    "malformed JSON": (b'{"dragons": [', None),
    "a missing field": ({"dragons": [{"numberToes": 7}]}, "dragons: row 0, column 'bodyLength': missing"),
    "a string": (
        {"dragons": [{"numberToes": "seven", "bodyLength": 150}]},
        "dragons: row 0, column 'numberToes': 'seven' is not a number",
    ),
    "infinity": (
        b'{"dragons": [{"numberToes": 7, "bodyLength": Infinity}]}',
        "dragons: row 0, column 'bodyLength': inf is not a finite number",
    ),
    "beyond float32": (
        {"dragons": [{"numberToes": 7, "bodyLength": 1e39}]},
        "dragons: row 0, column 'bodyLength': 1e+39 is too large",
    ),
    "an empty list": ({"dragons": []}, "dragons: expected a non-empty list"),
    "too many rows": ({"dragons": [{"numberToes": 7, "bodyLength": 150}] * 10_001}, "more than the 10,000 one request may hold"),
    "an extra field": (
        {"dragons": [{"numberToes": 7, "bodyLength": 150, "wings": 2}]},
        "dragons: row 0: unexpected field 'wings'",
    ),
    "a body over the limit": (b'{"dragons": [' + b" " * (2**20 + 10) + b"]}", None),
}


def test_a_json_body_sent_as_a_form_is_told_the_header_it_lacks(servers):
    """``curl -d`` sends ``application/x-www-form-urlencoded`` unless told otherwise; FastAPI then does
    not read the body as JSON, and the answer said the body was not the JSON object it was."""
    url, key = servers["checkpoint"]
    body = {"dragons": [{"numberToes": 7, "bodyLength": 150}]}
    status, answer = post(url, body, key=key, content_type="application/x-www-form-urlencoded")
    assert status == 415, answer
    assert answer["detail"] == (
        "send the body as JSON with the header Content-Type: application/json, not 'application/x-www-form-urlencoded'"
    )
    assert post(url, body, key=key, content_type="application/json; charset=utf-8")[0] == 200
    assert post(url, [[7, 150]], key=key)[1]["detail"].startswith('expected a JSON object {"dragons"')


def test_bad_requests_are_4xx_naming_row_and_field_and_the_server_keeps_serving(servers, checkpoints):
    url, key = servers["checkpoint"]
    for case, (body, message) in BAD_REQUESTS.items():
        status, answer = post(url, body, key=key)
        assert 400 <= status < 500, (case, status, answer)
        if message is not None:
            assert message in answer["detail"], (case, answer)
    status, answer = post(url, {"dragons": [{"numberToes": 7, "bodyLength": 150}]}, key=key)
    assert status == 200 and len(answer["predictions"]) == 1

    # 32 clients at once, each with a few single-row requests: dynamic batching answers them together.
    model = load_model(checkpoints["color"])
    errors: list = []

    def client(seed: int) -> None:
        generator = np.random.default_rng(seed)
        for _ in range(5):
            row = {"numberToes": int(generator.integers(2, 30)), "bodyLength": float(generator.uniform(80, 290))}
            status, answer = post(url, {"dragons": [row]}, key=key)
            expected = model.predict_proba(pd.DataFrame([row])).iloc[0]
            if status != 200 or not np.allclose(
                [answer["predictions"][0][c] for c in expected.index], expected.to_numpy(), atol=1e-6
            ):
                errors.append((status, answer))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]


def wait_until_read(url: str, count: int, limit: float = 60) -> None:
    """Wait until the server has accepted ``count`` connections and read every byte sent on them: their
    requests are in flight. A request the client has sent may still wait in the kernel, queued on the
    listening socket or unread (a body fits in the socket buffers), and a server that stops closes
    those unanswered, as any server does. Linux's ``/proc/net/tcp`` shows both: a queued connection's
    inode is 0 until a process accepts it, and each side's unsent and unread bytes (``tx:rx``)."""
    port = f":{int(url.rsplit(':', 1)[1]):04X}"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        server_side = [row for row in rows if row[1].endswith(port) and row[3] == "01"]
        client_side = [row for row in rows if row[2].endswith(port) and row[3] == "01"]
        accepted = all(row[9] != "0" and row[4].endswith(":00000000") for row in server_side)
        if len(server_side) >= count and accepted and all(row[4].startswith("00000000:") for row in client_side):
            return
        time.sleep(0.05)
    raise AssertionError(f"the server did not accept and read {count} requests in {limit} s")


def when_refused(url: str, limit: float = 30) -> float:
    """The moment (``time.monotonic``) from which a new connection to the server is refused."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic()
        except OSError:  # queued and unanswered for a second
            pass
        time.sleep(0.05)
    return math.inf


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the server's accepted connections from Linux's /proc")
@pytest.mark.parametrize(
    "signum, whole_group, settings",
    [
        (signal.SIGTERM, False, ["--ckpt_path", "color"]),
        (signal.SIGTERM, True, ["--model", "onnx"]),
        (signal.SIGINT, True, ["--ckpt_path", "color"]),
        (signal.SIGTERM, True, ["--model", "onnx", "--num_api_servers", "2"]),
    ],
    ids=[
        "SIGTERM to the server",
        "SIGTERM to its group (systemd), an ONNX file",
        "Ctrl-C (SIGINT to its group)",
        "SIGTERM to its group, an ONNX file, two HTTP processes",
    ],
)
def test_a_stop_refuses_new_connections_and_lets_the_requests_in_flight_finish_even_when_sent_twice(
    signum, whole_group, settings, checkpoints
):
    """``settings``: the server's options, its model named by its key in ``checkpoints``."""
    body = json.dumps({"dragons": [{"numberToes": 7, "bodyLength": 150.0}] * 10_000}).encode()
    answers: list = []
    sent = [threading.Event() for _ in range(6)]

    def client(done_sending: threading.Event) -> None:
        connection = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=120)
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        done_sending.set()
        response = connection.getresponse()
        answers.append((response.status, json.loads(response.read()), time.monotonic()))

    option, source, *more = settings
    with server(option, str(checkpoints[source]), *more) as (url, process):
        threads = [threading.Thread(target=client, args=(event,)) for event in sent]
        for thread in threads:
            thread.start()
        assert all(event.wait(60) for event in sent)
        wait_until_read(url, len(sent))  # six at once take the server 2 to 6 s here
        stop = lambda: os.killpg(process.pid, signum) if whole_group else process.send_signal(signum)  # noqa: E731
        stop()
        refused_at = when_refused(url)
        stop()  # an impatient second one must not cut the shutdown short
        for thread in threads:
            thread.join(timeout=120)
    assert len(answers) == 6 and all(status == 200 and len(answer["predictions"]) == 10_000 for status, answer, _ in answers)
    assert refused_at < max(finished for _, _, finished in answers), "refused while requests in flight were answered"


def test_sigterm_while_the_model_workers_start_stops_cleanly(checkpoints):
    process = subprocess.Popen(
        [sys.executable, "-m", "dragon_lightning", "serve", "--ckpt_path", str(checkpoints["color"]), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    started = process.stdout.readline()  # printed as the workers begin to load the model
    assert " at http://127.0.0.1:" in started, started
    time.sleep(0.5)  # the stop handler is in place; the workers are still loading
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert out.strip().endswith("dragon-lightning serve: stopped")


def test_a_stop_waits_until_the_worker_being_started_has_what_it_starts_from(capsys):
    """A stop signal while LitServe writes a model worker's start-up data (the model's bytes among them)
    cut that write short: the worker read half of it and printed a traceback (seen under load in the test
    above). The stop is held back until the worker has it, then takes effect."""
    from dragon_lightning.serve import Stop

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = Stop(os.getpid(), grace=1.0)
        with pytest.raises(KeyboardInterrupt), stop.held():
            stop(signal.SIGTERM, None)  # no KeyboardInterrupt here: the worker's data is still being written
            written = True
        assert written
        with pytest.raises(KeyboardInterrupt):
            Stop(os.getpid(), grace=1.0)(signal.SIGTERM, None)  # at any other time, at once
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert "dragon-lightning serve: stopping" in capsys.readouterr().out


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``, read from Linux's /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with suppress(OSError):
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        under = children.get(todo.pop(), [])
        found += under
        todo += under
    return found


def running(pid: int) -> bool:
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from Linux's /proc")
def test_a_server_killed_with_sigkill_leaves_no_process_behind(checkpoints):
    """SIGKILL gives the server no chance to stop what it started: the kernel ends its model workers, HTTP
    servers and LitServe's queue manager with it (the manager outlived it before)."""
    _, process = start_server("--model", str(checkpoints["onnx"]), "--num_api_servers", "2")
    started = descendants(process.pid)
    assert len(started) >= 4, "a queue manager, a model worker and two HTTP servers"
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (left := [pid for pid in started if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # not to leak them into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert not left, "still running after the server was killed"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--port", "70000"], "--port: Not of type Port: 70000 does not conform to restriction v>=1024 and v<=65535"),
        (["--port", "80"], "--port: Not of type Port: 80 does not conform to restriction v>=1024"),
        (["--host", "10.9.9.9"], "--host: Expected a typing.Literal['127.0.0.1', '0.0.0.0', '::']"),
        (["--port", "TAKEN"], "address already in use on 127.0.0.1; choose another --port"),
    ],
    ids=["port above 65535", "privileged port", "an address LitServe cannot listen on", "port in use"],
)
def test_an_address_the_server_cannot_listen_on_is_one_line_before_the_model_loads(options, message, checkpoints, scratch, capfd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = ["serve", "--ckpt_path", str(checkpoints["color"]), *[port if o == "TAKEN" else o for o in options]]
        expect_one_line_error(capfd, scratch, files_under(scratch), args, message.replace("TAKEN", port))


@pytest.mark.parametrize("given", ["a checkpoint", "a cut-short ONNX file"])
def test_a_model_file_onnxruntime_cannot_load_is_one_line(given, checkpoints, scratch, capfd):
    model = checkpoints["color"]
    if given == "a cut-short ONNX file":
        model = scratch / "cut.onnx"
        model.write_bytes(checkpoints["onnx"].read_bytes()[:5000])
    args = ["serve", "--model", str(model), "--port", str(free_port())]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"--model {model}: not an ONNX model")


def test_an_onnx_file_whose_tensors_name_other_files_is_one_line_and_those_files_are_not_read(checkpoints, scratch, capfd):
    onnx = pytest.importorskip("onnx")
    model = scratch / "external.onnx"
    onnx.save_model(onnx.load(checkpoints["onnx"]), model, save_as_external_data=True, location="weights.bin", size_threshold=0)
    args = ["serve", "--model", str(model), "--port", str(free_port())]
    message = f"--model {model}: keeps tensor data in other files (weights.bin), which are not read"
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message)


@pytest.mark.parametrize("left_out", [["outside_training_range"], ["predicted", "outside_training_range"]])
def test_an_onnx_file_without_the_decided_class_or_the_flag_is_one_line_asking_for_a_new_export(
    left_out, checkpoints, scratch, capfd
):
    """As export wrote a file before the graph held the extrapolation flag, or the decision."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(checkpoints["onnx"])
    for name in left_out:
        model.graph.output.remove(next(output for output in model.graph.output if output.name == name))
    without_checksum(model)  # exports of that time wrote none
    earlier = scratch / "earlier.onnx"
    onnx.save_model(model, earlier)
    args = ["serve", "--model", str(earlier), "--port", str(free_port())]
    message = f"--model {earlier}: its graph's outputs are not probabilities, predicted, outside_training_range"
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message, "export the checkpoint again")


# Metadata edited or written by another program: it labels the answers and tells /info the training range.
EDITED_METADATA = {
    "class names of another count": ("class_names", '["Blue", "Red"]', "names 2 classes for 3 probability columns"),
    "class names that are no list": ("class_names", "5", "its metadata class_names: Input should be a valid list"),
    "a threshold outside (0, 1)": ("threshold", "nan", "its metadata threshold: Input should be less than 1"),
    "training bounds nested too deep": ("feature_min", "[" * 50_000, "its metadata feature_min: Invalid JSON"),
    "training bounds that are no numbers": ("feature_max", '{"a": 1}', "its metadata feature_max: Input should be a valid list"),
    "another task": ("task", "size", "its metadata task: Input should be 'fire' or 'color'"),
    "a key damaged (the checksum's)": ("sha256", None, "its metadata sha2U6: Extra inputs are not permitted"),
}


@pytest.mark.parametrize("edit", EDITED_METADATA)
def test_an_onnx_file_whose_metadata_is_not_as_export_writes_it_is_one_line(edit, checkpoints, scratch, capfd):
    onnx = pytest.importorskip("onnx")
    key, value, message = EDITED_METADATA[edit]
    model = onnx.load(checkpoints["onnx"])
    if value is None:  # the key's name damaged: the file then holds no checksum
        next(entry for entry in model.metadata_props if entry.key == key).key = key[:4] + "U" + key[5:]
    else:
        next(entry for entry in model.metadata_props if entry.key == key).value = value
        without_checksum(model)  # as another program writes it (export's own checksum would refuse the edit first)
    edited = scratch / "edited.onnx"
    onnx.save_model(model, edited)
    args = ["serve", "--model", str(edited), "--port", str(free_port())]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"--model {edited}: ", message)


def test_onnx_metadata_that_is_not_utf8_is_one_line(checkpoints, scratch, capfd):
    """A damaged byte in a file without the checksum (an earlier export's): onnxruntime's UnicodeDecodeError
    was a traceback."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(checkpoints["onnx"])
    without_checksum(model)
    data = model.SerializeToString()
    damaged = scratch / "damaged.onnx"
    damaged.write_bytes(data.replace(b'"Blue"', b'"\xfflue"', 1))  # same length: the file still parses
    args = ["serve", "--model", str(damaged), "--port", str(free_port())]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"--model {damaged}: its metadata is not UTF-8 text")


def test_an_onnx_file_whose_names_are_not_utf8_is_one_line_without_onnxruntimes_own_lines(checkpoints, scratch, capfd):
    """onnxruntime cannot decode its own error about such a name; it printed three lines of its own
    ("EP Error ...") before retrying and failing again."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(checkpoints["onnx"])
    without_checksum(model)
    data = bytearray(model.SerializeToString())
    output = model.graph.output[0].SerializeToString()  # the graph's first output, by its bytes in the file
    data[data.index(output) + output.index(model.graph.output[0].name.encode()) + 1] = 0xFF
    damaged = scratch / "damaged.onnx"
    damaged.write_bytes(bytes(data))
    args = ["serve", "--model", str(damaged), "--port", str(free_port())]
    expect_one_line_error(
        capfd, scratch, files_under(scratch), args, f"--model {damaged}: not an ONNX model onnxruntime can load"
    )


def without_checksum(model) -> None:
    """An ONNX model as an earlier export or another program writes it: no checksum entry."""
    model.metadata_props.remove(next(entry for entry in model.metadata_props if entry.key == "sha256"))


def _alter_a_weight(model) -> None:
    from onnx import numpy_helper

    tensor = next(t for t in model.graph.initializer if numpy_helper.to_array(t).size > 1)
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] += 0.5
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def _swap_class_names(model) -> None:
    entry = next(entry for entry in model.metadata_props if entry.key == "class_names")
    entry.value = json.dumps(list(reversed(json.loads(entry.value))))


@pytest.mark.parametrize("alter", [_alter_a_weight, _swap_class_names], ids=["a weight", "the class names' order"])
def test_an_exported_file_altered_after_export_is_refused_by_its_checksum(alter, checkpoints, scratch, capfd):
    """What the metadata checks cannot see: a changed weight, or class names still valid but in another
    order, would answer wrongly without a word."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(checkpoints["onnx"])
    alter(model)
    altered = scratch / "altered.onnx"
    onnx.save_model(model, altered)
    args = ["serve", "--model", str(altered), "--port", str(free_port())]
    message = f"--model {altered}: its graph or metadata do not match the checksum export wrote with them"
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    damage=st.one_of(
        st.tuples(
            st.just("bytes"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=20)
        ),
        st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True)),
    )
)
def test_a_damaged_onnx_file_answers_as_before_or_is_refused_in_one_line(damage, checkpoints, tmp_path):
    """Bytes changed or a tail lost: the file the server would read is refused in one line, or answers
    exactly as the intact one. Without the checksum, about half of such files answered otherwise."""
    pytest.importorskip("onnx")
    from dragon_lightning.gates.inputs import read_onnx
    from dragon_lightning.predictors import onnx_predictor

    intact = checkpoints["onnx"].read_bytes()
    if damage[0] == "bytes":
        data = bytearray(intact)
        for where, value in damage[1]:
            data[int(where * len(data))] = value
    else:
        data = bytearray(intact[: int(damage[1] * len(intact))])
    damaged = tmp_path / f"damaged_{abs(hash(str(damage)))}.onnx"
    damaged.write_bytes(bytes(data))
    dragons = np.array([[4, 130], [12, 200], [22, 260], [7, 240]], dtype=np.float32)
    try:
        answers = onnx_predictor(str(damaged), read_onnx(damaged, "--model")).answer(dragons)
    except DragonInputError as error:
        assert "\n" not in str(error) and str(error).startswith(f"--model {damaged}: "), str(error)
        return
    assert answers == onnx_predictor("intact", intact).answer(dragons)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_serving_an_onnx_file_without_the_export_extra_is_one_line_naming_it(missing, checkpoints, scratch, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: importing it raises ImportError
    args = ["serve", "--model", str(checkpoints["onnx"]), "--port", str(free_port())]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"needs {missing}: pip install 'dragon-lightning[export]'")


@pytest.fixture(scope="module")
def servers(checkpoints):
    """A checkpoint server that requires a key and an ONNX server that does not, for the tests below."""
    with (
        server("--ckpt_path", str(checkpoints["color"]), environment={"DRAGON_LIGHTNING_API_KEY": KEY}) as (
            checkpoint_url,
            first,
        ),
        server("--model", str(checkpoints["onnx"])) as (onnx_url, second),
    ):
        yield {"checkpoint": (checkpoint_url, KEY), "onnx": (onnx_url, None), "processes": [first, second]}


def test_an_idle_server_waits_without_spending_cpu(servers):
    """LitServe's batched loop asked the request queue every millisecond while it was empty: an idle
    server with batching (the default) kept a tenth of a core busy: the two servers here spent 0.95 s
    of CPU in these 3 s."""
    import psutil

    def cpu_seconds() -> float:
        processes = [psutil.Process(p.pid) for p in servers["processes"]]
        processes += [child for process in processes for child in process.children(recursive=True)]
        return sum(sum(process.cpu_times()[:2]) for process in processes)

    time.sleep(1)  # whatever an earlier test sent has been answered
    before = cpu_seconds()
    time.sleep(3)
    assert cpu_seconds() - before < 0.1


def bad_row(client: int) -> dict:
    """A bad dragon that carries the client's own mark, in the value or in the field's name."""
    return [
        {"numberToes": f"mark{client:02d}z", "bodyLength": 150.0},
        {"numberToes": 7, "bodyLength": 150.0, f"mark{client:02d}z": 1},
        {"numberToes": 7, "bodyLength": f"mark{client:02d}z" * 3},
    ][client % 3]


@pytest.mark.parametrize("source", ["checkpoint", "onnx"])
def test_concurrent_requests_some_bad_each_get_only_their_own_answer(source, servers, checkpoints):
    """Requests released together are batched together; a bad one is refused alone, and no answer
    quotes another request."""
    url, key = servers[source]
    model = load_model(checkpoints["color"])
    generator = np.random.default_rng(0)
    clients = 48
    rows = [
        {"numberToes": int(generator.integers(2, 30)), "bodyLength": float(generator.uniform(80, 290))} for _ in range(clients)
    ]
    bad = {client for client in range(clients) if client % 3 == 1}
    answers: dict[int, tuple[int, dict]] = {}
    release = threading.Barrier(clients)

    def client(number: int) -> None:
        body = {"dragons": [rows[number], bad_row(number)] if number in bad else [rows[number]]}
        release.wait()
        answers[number] = post(url, body, key=key)

    for _ in range(3):
        threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for number, (status, answer) in answers.items():
            others = [f"mark{other:02d}z" for other in bad - {number}]
            assert not any(mark in json.dumps(answer) for mark in others), (number, answer)
            if number in bad:
                assert (
                    status == 422 and answer["detail"].startswith("dragons: row 1") and f"mark{number:02d}z" in answer["detail"]
                ), answer
            else:
                expected = model.predict_proba(pd.DataFrame([rows[number]])).iloc[0]
                assert status == 200, answer
                got = answer["predictions"][0]
                np.testing.assert_allclose([got[c] for c in expected.index], expected.to_numpy(), atol=1e-6)


MODEL_WORKER = """
import json, sys
import numpy as np
import onnxruntime
from dragon_lightning.serve_api import DragonAPI
threads = []
class Session(onnxruntime.InferenceSession):  # records what each session computes on
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        threads.append([self.get_session_options().intra_op_num_threads, self.get_session_options().inter_op_num_threads])
onnxruntime.InferenceSession = Session
source, onnx, rows = sys.argv[1], sys.argv[2] == "onnx", json.loads(sys.argv[3])
with open(source, "rb") as file:
    api = DragonAPI(source, onnx=onnx, data=file.read(), max_batch_size=4)
api.setup("cpu")
answers = api.predict((np.array(rows, np.float32), [1] * len(rows)))
threads += [] if onnx else [sys.modules["torch"].get_num_threads()]
imported = [m for m in ("torch", "lightning", "pandas") if m in sys.modules]
print(json.dumps({"answers": answers, "threads": threads, "imported": imported}))
"""


def model_worker(source: Path, kind: str, rows: list) -> dict:
    """A model worker built as LitServe builds one (a fresh interpreter, ``setup``, a batch of ``rows``):
    its answers, the threads it computes on and what it imported. Without the suite's OMP_NUM_THREADS, as a
    user's server starts."""
    environment = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    worker = subprocess.run(
        [sys.executable, "-c", MODEL_WORKER, str(source), kind, json.dumps(rows)],
        capture_output=True, text=True, timeout=120, env=environment,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    return json.loads(worker.stdout.splitlines()[-1])


def test_a_model_worker_answers_from_an_onnx_file_without_importing_pytorch(checkpoints):
    """LitServe starts each model worker as a fresh interpreter (spawn): serving an ONNX file there needs
    onnxruntime alone, and importing PyTorch and Lightning as well cost 4 s and 450 MB a worker."""
    model = load_model(checkpoints["color"])
    rows = [[7, 150.0], [22, 250.0], [-500, 9000.0]]
    result = model_worker(checkpoints["onnx"], "onnx", rows)
    assert result["imported"] == []
    answers = pd.DataFrame([answer for request in result["answers"] for answer in request])
    table = pd.DataFrame(rows, columns=["numberToes", "bodyLength"])
    expected = model.predict_proba(table)
    np.testing.assert_allclose(answers[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-6)
    assert answers["predicted"].tolist() == list(model.predict(table))
    assert answers["outside_training_range"].tolist() == list(model.outside_training_range(table)) == [False, False, True]


@pytest.mark.parametrize("kind", ["onnx", "checkpoint"])
def test_a_model_worker_computes_on_one_thread(kind, checkpoints):
    """A request's rows are few: a second thread bought nothing and spun between calls on the cores the
    HTTP processes share (unpinned on two cores, 1.2 to 1.4 ms of the worker's CPU per request
    against 0.24 to 0.34 with one; benchmarks/serve_load.py)."""
    source = checkpoints["onnx" if kind == "onnx" else "color"]
    result = model_worker(source, kind, [[7, 150.0], [22, 250.0]])
    assert result["threads"] == ([[1, 1]] if kind == "onnx" else [1])
    assert len(result["answers"]) == 2


SPAWNED_WORKER = """
import json, pickle, sys
import numpy as np
with open(sys.argv[1], "rb") as file:
    api = pickle.load(file)
api.setup("cpu")
rows = json.loads(sys.argv[2])
print(json.dumps(api.predict((np.array(rows, np.float32), [1] * len(rows)))))
"""


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_every_worker_serves_the_file_as_the_server_read_and_hashed_it(kind, checkpoints, tmp_path):
    """The workers start after the server has checked the file: they loaded it again from disk, so a file
    replaced meanwhile (a running fit rewrites last.ckpt every epoch) was served under the checksum /info
    gave for another, and two workers could serve two models."""
    from dragon_lightning.serve import ServeOptions, build_server

    served = tmp_path / ("model.onnx" if kind == "onnx" else "last.ckpt")
    served.write_bytes(checkpoints["onnx" if kind == "onnx" else "color"].read_bytes())
    original = served.read_bytes()
    options = ServeOptions(model=str(served)) if kind == "onnx" else ServeOptions(ckpt_path=str(served))
    server = build_server(options, api_key=None)
    served.write_bytes(checkpoints["fire"].read_bytes())  # after the check, before the workers start: another model
    (tmp_path / "api.pickle").write_bytes(pickle.dumps(server.lit_api))  # what LitServe hands a spawned worker
    rows = [[7, 150.0], [22, 250.0]]
    worker = subprocess.run(
        [sys.executable, "-c", SPAWNED_WORKER, str(tmp_path / "api.pickle"), json.dumps(rows)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    answers = pd.DataFrame([answer for request in json.loads(worker.stdout.splitlines()[-1]) for answer in request])
    expected = load_model(checkpoints["color"]).predict_proba(pd.DataFrame(rows, columns=["numberToes", "bodyLength"]))
    np.testing.assert_allclose(answers[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-6)
    assert server.model_metadata["model_sha256"] == hashlib.sha256(original).hexdigest()


def test_the_key_is_checked_before_the_body_is_read(servers):
    url, _ = servers["checkpoint"]
    for body in (b'{"dragons": [', b'{"dragons": [{"numberToes": "secret-value"}]}'):
        status, answer = post(url, body, key=None)
        assert status == 401 and "secret" not in json.dumps(answer), answer
        assert post(url, body, key=KEY + "x")[0] == 401
    with urllib.request.urlopen(f"{url}/health", timeout=10) as health:
        assert health.status == 200, "probes need no key"


@pytest.mark.parametrize(
    "options, environment",
    [(["--api_key", ""], {}), (["--api_key", "  "], {}), ([], {"DRAGON_LIGHTNING_API_KEY": ""})],
    ids=["empty option", "blank option", "empty variable"],
)
def test_an_empty_key_is_refused_at_start(options, environment, checkpoints, scratch, capfd, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    args = ["serve", "--ckpt_path", str(checkpoints["color"]), "--port", str(free_port()), *options]
    line = expect_one_line_error(capfd, scratch, files_under(scratch), args)
    assert "--api_key" in line or "DRAGON_LIGHTNING_API_KEY" in line


# Any JSON: scalars of every kind (huge integers, NaN and infinities, strings with lone surrogates), nested.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None) | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=60)
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20
)
FIELDS = st.sampled_from(["numberToes", "bodyLength"]) | st.text(max_size=12)
# Bodies near the valid one, which reach the row and field checks.
DRAGON_BODIES = st.fixed_dictionaries(
    {"dragons": st.lists(st.dictionaries(FIELDS, SCALARS | JSON, max_size=3) | JSON, max_size=4)}
)
BODIES = (
    st.builds(lambda body: json.dumps(body).encode(), JSON | DRAGON_BODIES)
    | st.binary(max_size=80)
    | st.integers(min_value=1, max_value=2_000).map(lambda depth: b"[" * depth + b"]" * depth)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_any_body_is_answered_alone_as_load_model_would_or_refused_in_one_line(body, servers, checkpoints):
    """Sent at the same moment as a good request: the good one gets its answer; the other gets the
    model's answer or a 4xx with one line naming where it is wrong, never a 500, never the other's content."""
    url, key = servers["checkpoint"]
    good = {"dragons": [{"numberToes": 9, "bodyLength": 171.5}]}
    answers: dict[str, tuple[int, dict]] = {}
    release = threading.Barrier(2)

    def send(name: str, payload) -> None:
        release.wait()
        answers[name] = post(url, payload if isinstance(payload, bytes) else json.dumps(payload).encode(), key=key)

    threads = [threading.Thread(target=send, args=item) for item in (("good", good), ("any", body))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    status, answer = answers["good"]
    assert status == 200 and len(answer["predictions"]) == 1 and "171.5" not in json.dumps(answer)
    status, answer = answers["any"]
    if status == 200:
        model = load_model(checkpoints["color"])
        rows = pd.DataFrame(json.loads(body)["dragons"])
        expected = model.predict_proba(rows)
        np.testing.assert_allclose(
            pd.DataFrame(answer["predictions"])[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-6
        )
    else:
        assert status in (400, 422), (status, answer)
        detail = answer["detail"]
        assert isinstance(detail, str) and "\n" not in detail and len(detail) < 300, detail
        assert detail.startswith(("dragons", "expected a JSON object", "the body is not JSON")), detail
