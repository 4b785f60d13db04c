"""One sweep shared by several machines on a real PostgreSQL server: two ``sweep`` commands, each in a
folder of its own, share one study; one is killed with SIGKILL mid-trial and the other takes its trial
over after the heartbeat's grace period."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from clihelpers import ROOT, TESTS, config, expect_one_line_error, files_under, run
from optuna.trial import TrialState
from postgres import PASSWORD

FIRE_SPACE = str(ROOT / "configs" / "sweeps" / "fire_logistic.yaml")


def sweep_command(url: str, study: str, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dragon_lightning",
        "sweep",
        "--config",
        config("fire_logistic.yaml"),
        "--space",
        FIRE_SPACE,
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
        *extra,
    ]


def machine(folder: Path, command: list[str]) -> subprocess.Popen:
    """A "machine": a sweep process in a working folder of its own."""
    folder.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load(url: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=url.replace("postgresql://", "postgresql+psycopg://"))


def counted(study: optuna.Study) -> list:
    from dragon_lightning.search.trials import finished

    return finished(study)


def printed_trials(output: str) -> list[int]:
    return [int(line.split(":")[0].split()[1]) for line in output.splitlines() if line.startswith("trial ")]


@pytest.mark.slow
def test_two_machines_share_one_study_and_end_with_exactly_n_trials(postgres, tmp_path):
    url = postgres.url()
    command = sweep_command(url, "together", 6, "--trainer.max_epochs", "3")
    machines = [machine(tmp_path / name, command) for name in ("a", "b")]
    outputs = [process.communicate(timeout=300) for process in machines]
    for process, (out, err) in zip(machines, outputs):
        assert process.returncode == 0, err[-3000:]
        assert PASSWORD not in out + err, "the password never shows"
    study = load(url, "together")
    done = counted(study)
    assert len(done) == 6 and all(t.state == TrialState.COMPLETE for t in done)
    ran = [number for out, _ in outputs for number in printed_trials(out)]
    assert sorted(ran) == sorted(t.number for t in done), "every trial ran on exactly one machine"
    assert all(printed_trials(out) for out, _ in outputs), "both machines took trials"
    settings = {tuple(sorted(t.params.items())) for t in done}
    assert len(settings) == 6, "machines running the same command never draw the same settings"
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert all("training_seconds" not in t.user_attrs for t in surplus), "a surplus trial never trains"

    # Once more on one machine: the outputs of the shared study, then fit the best config.
    final = subprocess.run(
        command, cwd=tmp_path / "a", capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(TESTS)}
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert "6 trials done, 0 to run" in final.stdout
    folder = tmp_path / "a" / "sweep"
    for name in ("trials.csv", "best_config.yaml", "optimization_history.png"):
        assert (folder / name).is_file(), name
        assert PASSWORD.encode() not in (folder / name).read_bytes()
    best = yaml.safe_load((folder / "best_config.yaml").read_text())
    tested = run(
        "fit",
        "--config",
        str(folder / "best_config.yaml"),
        "--trainer.max_epochs",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path / "final"),
        "--data.data_dir",
        "null",
    )
    assert "test/acc" in tested.trainer.callback_metrics
    assert str(tested.trainer.log_dir).startswith(str(tmp_path / "final")), (
        "the best config's runs follow --trainer.default_root_dir"
    )
    assert best["data"]["batch_size"] == study.best_trial.params["data.batch_size"]


@pytest.mark.slow
def test_a_machine_killed_mid_trial_has_its_trial_taken_over(postgres, tmp_path):
    url = postgres.url()
    command = sweep_command(url, "takeover", 4, "--trainer.max_epochs", "40", "--heartbeat", "2")
    first = machine(tmp_path / "a", command)
    deadline = time.monotonic() + 120
    running = []
    while not running and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            running = load(url, "takeover").get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # the study is not there yet
            continue
    assert running, "the first machine started a trial"
    killed = running[0]
    time.sleep(1.0)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    killed_at = datetime.datetime.now()
    second = machine(tmp_path / "b", command)
    _out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    study = load(url, "takeover")
    done = counted(study)
    assert len(done) == 4 and all(t.state == TrialState.COMPLETE for t in done)
    stale = study.trials[killed.number]
    assert stale.state == TrialState.FAIL and stale.params, "the killed trial was failed once its heartbeat stopped"
    retry = [t for t in done if killed.number in t.system_attrs.get("retry_history", [])]
    assert len(retry) == 1 and retry[0].params == stale.params, "taken over with the same settings"
    started = (retry[0].datetime_start - killed_at).total_seconds()
    print(f"takeover: the killed trial ran again {started:.1f} s after the SIGKILL (heartbeat 2 s, grace 4 s)")


BAD_STORAGE = {
    "a server that is down": (
        lambda server: f"postgresql://dragon:{PASSWORD}@127.0.0.1:1/dragons",
        "cannot open the study database",
    ),
    "a wrong password": (lambda server: server.url(password="wrong-pw-123"), "password authentication failed"),
    "a database that does not exist": (lambda server: server.url(database="nowhere"), 'database "nowhere" does not exist'),
}


@pytest.mark.parametrize("case", BAD_STORAGE)
def test_bad_storage_is_one_line_without_the_password(case, postgres, tmp_path, capfd):
    make_url, message = BAD_STORAGE[case]
    url = make_url(postgres)
    args = [
        "sweep",
        "--config",
        config("fire_logistic.yaml"),
        "--space",
        FIRE_SPACE,
        "--storage",
        url,
        "--output_dir",
        str(tmp_path / "sweep"),
        "--data.data_dir",
        "null",
    ]
    line = expect_one_line_error(capfd, tmp_path, files_under(tmp_path), args, message)
    assert PASSWORD not in line and "wrong-pw-123" not in line
