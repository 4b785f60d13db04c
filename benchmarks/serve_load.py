"""Load on ``dragon-lightning serve`` from ``wrk`` (a C load generator), side by side in one run.

For a checkpoint and for its ONNX export, with dynamic batching on (``--max_batch_size 64``) and off
(``1``): single-row requests per second and p50, p95 and p99 latency at concurrency 1, 16, 64 and
256, each a fixed number of seconds of ``wrk`` on loopback, and the CPU time the server's processes spent
per request (all of them: the HTTP and queue processes and the model worker). ``wrk`` runs on a core of its own and the
server on the others (``taskset``; on a machine with fewer than ``--min-cores`` cores both share them
all, and the table says so), so the figure is the server's rather than the clients'. Trains a
2-epoch color MLP first when no checkpoint is given. Needs ``wrk`` (``apt-get install wrk``).

    python benchmarks/serve_load.py [--ckpt_path X] [--seconds 5] [--concurrency 1 16 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

import psutil

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("post_dragons.lua")
sys.path.insert(0, str(ROOT / "tests"))
from postgres import free_port  # noqa: E402

CLI = [sys.executable, "-m", "dragon_lightning"]


def train_and_export(folder: Path, checkpoint: Path | None) -> tuple[Path, Path]:
    """``checkpoint`` (by default a 2-epoch color MLP's: what is served hardly changes the cost) and its ONNX export."""
    if checkpoint is None:
        subprocess.run(
            [*CLI, "fit", "--config", str(ROOT / "configs/color_mlp.yaml"), "--trainer.max_epochs", "2",
             "--test_after_fit", "false", "--figures.enabled", "false", "--trainer.default_root_dir", str(folder)],
            check=True, capture_output=True,
        )  # fmt: skip
        checkpoint = next(folder.rglob("last.ckpt"))
    onnx = folder / "model.onnx"
    subprocess.run([*CLI, "export", "--ckpt_path", str(checkpoint), "--output", str(onnx)], check=True, capture_output=True)
    return checkpoint, onnx


def cores_split(min_cores: int) -> tuple[list[str], list[str], str]:
    """``taskset`` prefixes for the server and for ``wrk``: the last core for ``wrk`` when there are enough."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < min_cores or shutil.which("taskset") is None:
        return [], [], f"server and wrk share all {len(cores)} cores"
    server, load = ",".join(map(str, cores[:-1])), str(cores[-1])
    return ["taskset", "-c", server], ["taskset", "-c", load], f"server on cores {server}, wrk on core {load}"


def start(model_option: list[str], max_batch_size: int, pinned: list[str], extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [*pinned, *CLI, "serve", *model_option, "--port", str(port), "--max_batch_size", str(max_batch_size), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def wrk(url: str, concurrency: int, seconds: int, pinned: list[str]) -> dict:
    """One ``wrk`` run of ``seconds`` at ``concurrency`` open connections; the Lua script's JSON line."""
    command = [*pinned, "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def cpu_seconds(process: subprocess.Popen) -> float:
    """User and system CPU time the server and every process under it have spent so far."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    total = 0.0
    for member in tree:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, default=None, help="a checkpoint to serve (default: train one)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk's duration per line")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--serve-args", default="", help="more serve options, as one string ('--fast_queue true')")
    parser.add_argument("--models", nargs="+", default=["checkpoint", "onnx"], choices=["checkpoint", "onnx"])
    parser.add_argument("--batching", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--min-cores", type=int, default=2, help="pin wrk apart from the server from this many cores")
    options = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    server_cores, load_cores, placement = cores_split(options.min_cores)
    rows = []
    with TemporaryDirectory() as folder:
        checkpoint, onnx = train_and_export(Path(folder), options.ckpt_path)
        print(f"single-row requests, {options.seconds} s of wrk per line; {placement}; serve {options.serve_args}\n")
        print("| model | batching | concurrency | requests/s | p50 (ms) | p95 (ms) | p99 (ms) | errors | server CPU ms/request |")
        print("|---|---|---|---|---|---|---|---|---|")
        served = {"checkpoint": ["--ckpt_path", str(checkpoint)], "onnx": ["--model", str(onnx)]}
        for model in options.models:
            for batching in options.batching:
                max_batch_size = 64 if batching == "on" else 1
                process, url = start(served[model], max_batch_size, server_cores, options.serve_args.split())
                try:
                    wrk(url, 16, 1, load_cores)  # warm-up
                    for concurrency in options.concurrency:
                        spent = cpu_seconds(process)
                        result = wrk(url, concurrency, options.seconds, load_cores)
                        result["cpu_ms"] = (cpu_seconds(process) - spent) * 1e3 / max(result["requests"], 1)
                        errors = result["socket_errors"] + result["non_2xx"]
                        rows.append({"model": model, "batching": batching, "concurrency": concurrency, **result})
                        print(
                            f"| {model} | {batching} | {concurrency} | {result['rps']:,.0f} | {result['p50']:.1f} | "
                            f"{result['p95']:.1f} | {result['p99']:.1f} | {errors} | {result['cpu_ms']:.2f} |",
                            flush=True,
                        )
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=60)
    print()
    rate = {(row["model"], row["batching"], row["concurrency"]): row for row in rows}
    for model in ("checkpoint", "onnx"):
        if (model, "on", 64) in rate and (model, "off", 64) in rate:
            on, off = rate[model, "on", 64], rate[model, "off", 64]
            print(
                f"{model}: batching on / off at concurrency 64: {on['rps'] / off['rps']:.2f} (target: at least 2); "
                f"p99 with batching at concurrency 64: {on['p99']:.1f} ms (target: under 100)"
            )
    return {"placement": placement, "rows": rows}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
