"""Load on ``dragon-lightning serve`` (loopback only, bounded in count and time), side by side in one run.

Single-row requests per second and p50/p99 latency at concurrency 1, 8 and 64, with dynamic batching
on (``--max_batch_size 64``) and off (``1``); rows per second for 1,000-row requests; and, on the same
rows, in-process ``predict_proba`` and onnxruntime. Trains a 2-epoch color MLP first when no
checkpoint is given.

    python benchmarks/serve_load.py [--ckpt_path X] [--requests 640]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from postgres import free_port  # noqa: E402

from dragon_lightning import load_model  # noqa: E402


def post(url: str, rows: list[dict]) -> float:
    body = json.dumps({"dragons": rows}).encode()
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


def start(checkpoint: Path, max_batch_size: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dragon_lightning",
            "serve",
            "--ckpt_path",
            str(checkpoint),
            "--port",
            str(port),
            "--max_batch_size",
            str(max_batch_size),
        ],
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


def load(url: str, concurrency: int, requests: int, rows: list[dict]) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) for ``requests`` requests of ``rows``."""
    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(lambda _: post(url, rows), range(requests)))
        seconds = time.perf_counter() - started
    return requests / seconds, 1000 * float(np.percentile(latencies, 50)), 1000 * float(np.percentile(latencies, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=640, help="requests per measurement (bounded)")
    options = parser.parse_args()
    with TemporaryDirectory() as folder:
        checkpoint = options.ckpt_path
        if checkpoint is None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dragon_lightning",
                    "fit",
                    "--config",
                    str(ROOT / "configs/color_mlp.yaml"),
                    "--trainer.max_epochs",
                    "2",
                    "--test_after_fit",
                    "false",
                    "--figures.enabled",
                    "false",
                    "--data.data_dir",
                    "null",
                    "--trainer.default_root_dir",
                    folder,
                ],
                check=True,
                capture_output=True,
            )
            checkpoint = next(Path(folder).rglob("last.ckpt"))
        generator = np.random.default_rng(0)
        one = [{"numberToes": 7, "bodyLength": 150.0}]
        thousand = [
            {"numberToes": int(t), "bodyLength": float(b)}
            for t, b in zip(generator.integers(2, 30, 1000), generator.uniform(80, 290, 1000))
        ]
        print("| batching | concurrency | requests/s | p50 (ms) | p99 (ms) |\n|---|---|---|---|---|")
        rates = {}
        for max_batch_size, label in ((64, "on"), (1, "off")):
            process, url = start(checkpoint, max_batch_size)
            try:
                load(url, 8, 40, one)  # warm-up
                for concurrency in (1, 8, 64):
                    rate, p50, p99 = load(url, concurrency, options.requests, one)
                    rates[label, concurrency] = rate
                    print(f"| {label} | {concurrency} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |")
                if label == "on":
                    big_rate, _, _ = load(url, 4, 40, thousand)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        model = load_model(checkpoint)
        table = pd.DataFrame(thousand)
        started = time.perf_counter()
        for _ in range(50):
            model.predict_proba(table)
        in_process = 50 * 1000 / (time.perf_counter() - started)
        export = Path(folder) / "model.onnx"
        subprocess.run(
            [sys.executable, "-m", "dragon_lightning", "export", "--ckpt_path", str(checkpoint), "--output", str(export)],
            check=True,
            capture_output=True,
        )
        import onnxruntime

        session = onnxruntime.InferenceSession(str(export), providers=["CPUExecutionProvider"])
        features = table.to_numpy(dtype=np.float32)
        started = time.perf_counter()
        for _ in range(50):
            session.run(["probabilities"], {"features": features})
        onnx_rate = 50 * 1000 / (time.perf_counter() - started)
    print(
        f"\n1,000-row requests (batching on, 4 clients): {big_rate * 1000:,.0f} rows/s; in-process predict_proba: "
        f"{in_process:,.0f} rows/s; onnxruntime: {onnx_rate:,.0f} rows/s"
    )
    print(f"batching on / off at concurrency 64: {rates['on', 64] / rates['off', 64]:.2f} (target: at least 2)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
