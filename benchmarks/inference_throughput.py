"""Inference speed of a trained model three ways, on the same rows in one process, side by side:
the exported ONNX file in onnxruntime, ``load_model(...).predict_proba`` and the whole
``dragon-lightning predict`` command (which also reads and writes the CSV).

    python benchmarks/inference_throughput.py --rows 1000000 --config configs/color_mlp.yaml

Trains the config briefly (inference cost does not depend on how well), exports it, and prints rows
per second, each figure the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dragon_lightning import load_model
from dragon_lightning.commands import cli_main

ROOT = Path(__file__).resolve().parent.parent


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def quietly(args: list[str]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli_main(args)


def measure(config: str, rows: int, repeats: int, folder: Path) -> dict:
    import onnxruntime

    common = ["--config", str(ROOT / config), "--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false"]
    quietly(["fit", *common, "--trainer.max_epochs", "2", "--data.data_dir", str(folder / "data"), "--test_after_fit", "false"])
    checkpoint = folder / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    report = quietly(["export", "--ckpt_path", str(checkpoint), "--output", str(folder / "model.onnx")])
    rng = np.random.default_rng(0)
    dragons = pd.DataFrame({"numberToes": rng.integers(2, 30, rows).astype(float), "bodyLength": rng.uniform(80, 300, rows)})
    dragons.to_csv(folder / "dragons.csv", index=False)
    features = dragons.to_numpy(dtype=np.float32)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    model = load_model(checkpoint)
    predict_args = [
        "predict",
        *common,
        "--ckpt_path",
        str(checkpoint),
        "--data.predict_csv",
        str(folder / "dragons.csv"),
        "--data.batch_size",
        "65536",
        "--predictions.output_path",
        str(folder / "out.csv"),
        "--predictions.overwrite",
        "true",
    ]
    seconds = {
        "onnxruntime": best_seconds(lambda: session.run(["probabilities"], {"features": features}), repeats),
        "predict_proba": best_seconds(lambda: model.predict_proba(dragons), repeats),
        "predict command": best_seconds(lambda: quietly(predict_args), repeats),
    }
    return {
        "config": config,
        "rows": rows,
        "onnx_bytes": report.size_bytes,
        "max_abs_difference": report.max_abs_difference,
        "rows_per_second": {name: rows / value for name, value in seconds.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/color_mlp.yaml")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args.config, args.rows, args.repeats, Path(folder))
    rates = result["rows_per_second"]
    print(
        f"{args.config}, {args.rows:,} rows; ONNX file {result['onnx_bytes']:,} bytes, "
        f"max |difference| from PyTorch {result['max_abs_difference']:.2g}"
    )
    print("| way | rows per second | vs onnxruntime |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates['onnxruntime']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
