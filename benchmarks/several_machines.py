"""Several machines, emulated on this one (loopback): what two nodes and two sweep machines cost and give.

1. Two-node DDP (Lightning's variables, 1 process per node) against one process: wall time of the same
   fit, side by side in one run, and whether test/acc is the same. On one 2-core machine this proves
   correctness, not speed-up: both "nodes" share the same cores and talk over loopback.
2. One study on a real PostgreSQL server (started here, as the tests start it): trials per minute for
   one machine and for two; trials lost or run twice; and, with one machine killed by SIGKILL in the
   middle of a trial, how long until its trial runs again elsewhere (heartbeat 2 s, grace 4 s).

    python benchmarks/several_machines.py [--trials 8] [--epochs 20]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from postgres import PostgresServer, free_port, server_binaries  # noqa: E402

from dragon_lightning.search.trials import finished  # noqa: E402

PYTHON = [sys.executable, "-m", "dragon_lightning"]


def fit_args(epochs: int) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs/color_mlp.yaml"),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--figures.enabled",
        "false",
        "--data.data_dir",
        "null",
        "--trainer.default_root_dir",
        "runs",
    ]


def test_accuracy(output: str) -> float:
    return float(re.search(r"test/acc\s+([0-9.]+)", output).group(1))


def two_nodes_against_one(epochs: int) -> None:
    with TemporaryDirectory() as folder:
        started = time.perf_counter()
        single = subprocess.run([*PYTHON, *fit_args(epochs)], cwd=folder, capture_output=True, text=True, check=True)
        single_seconds = time.perf_counter() - started
    with TemporaryDirectory() as folder:
        port, nodes = free_port(), []
        started = time.perf_counter()
        for rank in (0, 1):
            environment = {
                **os.environ,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NODE_RANK": str(rank),
                "WORLD_SIZE": "2",
            }
            command = [
                *PYTHON,
                *fit_args(epochs),
                "--trainer.num_nodes",
                "2",
                "--trainer.devices",
                "1",
                "--trainer.strategy",
                "ddp",
            ]
            nodes.append(
                subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        outputs = [node.communicate() for node in nodes]
        two_seconds = time.perf_counter() - started
    print(f"| fit, {epochs} epochs | wall time (s) | test/acc |\n|---|---|---|")
    print(f"| one process | {single_seconds:.1f} | {test_accuracy(single.stdout):.6f} |")
    print(f"| two nodes, 1 process each | {two_seconds:.1f} | {test_accuracy(outputs[0][0]):.6f} |")
    print(f"two nodes / one process: {two_seconds / single_seconds:.2f} (the same 2 cores)\n")


def sweep(url: str, study: str, trials: int, epochs: int, *extra: str) -> list[str]:
    return [
        *PYTHON,
        "sweep",
        "--config",
        str(ROOT / "configs/color_mlp.yaml"),
        "--space",
        str(ROOT / "configs/sweeps/color_mlp.yaml"),
        "--storage",
        url,
        "--study_name",
        study,
        "--n_trials",
        str(trials),
        "--output_dir",
        "sweep",
        "--data.data_dir",
        "null",
        "--trainer.max_epochs",
        str(epochs),
        "--prune",
        "false",
        *extra,
    ]


def machines(count: int, command: list[str], folder: Path) -> list[subprocess.Popen]:
    processes = []
    for index in range(count):
        (folder / f"m{index}").mkdir()
        processes.append(
            subprocess.Popen(command, cwd=folder / f"m{index}", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return processes


def study_of(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg://"))


def shared_study(server: PostgresServer, trials: int, epochs: int) -> None:
    url = server.url()
    print("| machines | trials | minutes | trials per minute | counted | lost | run twice |\n|---|---|---|---|---|---|---|")
    for count in (1, 2):
        with TemporaryDirectory() as folder:
            name = f"rate{count}"
            started = time.perf_counter()
            for process in machines(count, sweep(url, name, trials, epochs), Path(folder)):
                process.communicate()
            minutes = (time.perf_counter() - started) / 60
            study = study_of(url, name)
            done = finished(study)
            ran = [t.number for t in study.trials if "training_seconds" in t.user_attrs and t.state == TrialState.COMPLETE]
            print(
                f"| {count} | {trials} | {minutes:.2f} | {trials / minutes:.1f} | {len(done)} | {max(trials - len(done), 0)} | "
                f"{len(ran) - len(set(ran))} |"
            )
    with TemporaryDirectory() as folder:
        name = "takeover"
        first, second = machines(2, sweep(url, name, 4, epochs * 2, "--heartbeat", "2"), Path(folder))
        running = []
        while len(running) < 2:  # both machines in the middle of a trial
            time.sleep(0.5)
            try:
                running = study_of(url, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except KeyError:
                continue
        first.send_signal(signal.SIGKILL)
        first.communicate()
        killed_at = datetime.datetime.now()
        second.communicate()
        study = study_of(url, name)
        retry = next(t for t in study.trials if t.system_attrs.get("retry_history"))
        original = study.trials[retry.system_attrs["retry_history"][0]]
        print(
            f"\nSIGKILL mid-trial: trial {original.number} ran again {(retry.datetime_start - killed_at).total_seconds():.1f} s "
            f"later on the other machine (heartbeat 2 s, grace 4 s), with the same settings: {retry.params == original.params}; "
            f"counted trials {len(finished(study))} of 4"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    options = parser.parse_args()
    two_nodes_against_one(options.epochs)
    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql")
    server = PostgresServer(binaries)
    server.start()
    try:
        shared_study(server, options.trials, options.epochs)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
