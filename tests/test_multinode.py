"""Two "nodes" on one machine (loopback, gloo): two separate process trees that find each other the ways
clusters start jobs, with Lightning's own variables and with torchrun. The commands are the README's
"Several machines" commands, with 127.0.0.1 for the first node's address."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelpers import TESTS, config, run
from postgres import free_port
from test_cli import read_events

FIT = [
    "fit",
    "--config",
    config("color_mlp.yaml"),
    "--trainer.num_nodes",
    "2",
    "--trainer.devices",
    "1",
    "--trainer.strategy",
    "ddp",
    "--trainer.accelerator",
    "cpu",
    "--trainer.max_epochs",
    "3",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.default_root_dir",
    "shared",
    "--data.data_dir",
    "null",
    "--data.test_fraction",
    "0.33",
    "--trainer.callbacks+=test_ddp.SaveRankWeights",
]


def launch(how: str, node_rank: int, port: int) -> list[str]:
    """The README's command for one node (torchrun as ``python -m torch.distributed.run``, the same program)."""
    if how == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(node_rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "-m",
            "dragon_lightning",
            *FIT,
        ]
    return [sys.executable, "-m", "dragon_lightning", *FIT]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["lightning", "torchrun"])
def test_two_nodes_train_as_one_and_test_as_one_process_would(how, tmp_path):
    port = free_port()
    nodes = []
    for rank in (0, 1):
        environment = {**os.environ, "PYTHONPATH": str(TESTS)}
        if how == "lightning":
            environment.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank), WORLD_SIZE="2")
        nodes.append(
            subprocess.Popen(
                launch(how, rank, port), cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]

    shared = tmp_path / "shared"
    ranks = [torch.load(shared / f"rank{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0]), "identical weights on every rank"
    assert [p.name for p in (shared / "lightning_logs").iterdir()] == ["version_0"], "exactly one run folder"
    run_dir = shared / "lightning_logs" / "version_0"
    assert len(list(run_dir.glob("config.yaml"))) == 1
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, "one best and one last checkpoint, written once"
    assert {p.name for p in (run_dir / "figures").glob("*.png")} >= {"decision_regions.png", "confusion_matrix.png"}
    assert [line for out, _ in outputs for line in out.splitlines() if line.startswith("run folder:")] == [
        "run folder: shared/lightning_logs/version_0"
    ], "rank 0 alone reports"

    best = next(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    single = run(
        "test",
        "--config",
        config("color_mlp.yaml"),
        "--ckpt_path",
        str(best),
        "--data.test_fraction",
        "0.33",
        "--data.data_dir",
        "null",
        "--trainer.default_root_dir",
        str(tmp_path / "single"),
    )
    two_nodes = read_events(run_dir)["scalars"]["test/acc"][-1]
    assert two_nodes == pytest.approx(float(single.trainer.callback_metrics["test/acc"]), abs=1e-7)


def test_a_node_that_never_arrives_is_one_line_naming_the_rendezvous(tmp_path):
    port = free_port()
    environment = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": "0", "WORLD_SIZE": "2"}
    command = [
        sys.executable,
        "-m",
        "dragon_lightning",
        *FIT[: FIT.index("--trainer.strategy")],
        *FIT[FIT.index("--trainer.accelerator") : -1],
        "--trainer.strategy",
        "lightning.pytorch.strategies.DDPStrategy",
        "--trainer.strategy.init_args.timeout",
        "0:00:05",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dragon-lightning: error: rendezvous at 127.0.0.1:{port}: Timed out after")
    assert "1/2 clients joined" in last
    assert not [path for path in tmp_path.rglob("*") if path.is_file()], "nothing written"


def two_nodes(folder: Path, *options: str) -> list[subprocess.CompletedProcess]:
    """Both nodes with Lightning's variables, each in its own process tree, in ``folder``."""
    port = free_port()
    nodes = []
    for rank in (0, 1):
        environment = {
            **os.environ,
            "PYTHONPATH": str(TESTS),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "NODE_RANK": str(rank),
            "WORLD_SIZE": "2",
        }
        command = [sys.executable, "-m", "dragon_lightning", *FIT, *options]
        nodes.append(
            subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [node.communicate(timeout=300) for node in nodes]
    return [subprocess.CompletedProcess(node.args, node.returncode, *output) for node, output in zip(nodes, outputs)]


@pytest.mark.slow
def test_two_nodes_stopped_by_sigterm_resume_to_the_same_weights(tmp_path):
    """A scheduler's SIGTERM on both nodes mid-epoch; the same commands with --ckpt_path last end
    bit-identical to two nodes never interrupted."""
    longer = ["--trainer.max_epochs", "5", "--checkpoint.every_n_train_steps", "5", "--figures.enabled", "false"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "stopped").mkdir()
    assert all(node.returncode == 0 for node in two_nodes(tmp_path / "whole", *longer))
    stop = [
        "--trainer.callbacks+=test_resume.SignalAtStep",
        "--trainer.callbacks.init_args.signum",
        str(int(signal.SIGTERM)),
        "--trainer.callbacks.init_args.step",
        "22",
    ]
    stopped = two_nodes(tmp_path / "stopped", *longer, *stop)
    assert [node.returncode for node in stopped] == [128 + signal.SIGTERM] * 2, stopped[0].stderr[-3000:]
    resumed = two_nodes(tmp_path / "stopped", *longer, "--ckpt_path", "last")
    assert all(node.returncode == 0 for node in resumed), resumed[0].stderr[-3000:]
    for rank in (0, 1):
        whole = torch.load(tmp_path / "whole" / "shared" / f"rank{rank}.pt")
        again = torch.load(tmp_path / "stopped" / "shared" / f"rank{rank}.pt")
        assert all(torch.equal(whole[name], again[name]) for name in whole), f"rank {rank} ends where it would have"
    accuracy = [
        read_events(folder / "shared" / "lightning_logs" / version)["scalars"]["test/acc"][-1]
        for folder, version in ((tmp_path / "whole", "version_0"), (tmp_path / "stopped", "version_1"))
    ]
    assert accuracy[0] == accuracy[1]
