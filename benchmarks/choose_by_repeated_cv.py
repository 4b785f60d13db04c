"""Choose what a shipped config recommends by repeated cross-validation, never by test accuracy.

For each config and each candidate change (a few ``fit`` overrides: input noise, label smoothing,
weight decay, dropout, another MLP in place of the config's model, stochastic weight averaging judged
on final weights, a seed ensemble), ``dragon-lightning cv --repeats R --folds K`` on the non-test
rows of one split (the config's seed), every candidate on the same folds as the config itself. Prints
each candidate's mean validation loss and accuracy, and its paired difference from the config (the
mean over the same folds, with the standard error from the draws' mean differences): a change is
worth shipping only where the difference is larger than about two standard errors.

Every candidate is judged as its refit trains (``--judge refit``, the default): each fold's weights
after the median kept epochs, ``cv``'s "at refit epochs" columns, not each fold's best epoch on the
rows it is scored on (``--judge kept``, which flatters candidates whose epochs differ much). A seed
ensemble is validated once, at its end, so it is judged at its kept epochs either way.

``--peers`` adds scikit-learn's peers (``dragon_lightning.baselines``) fitted on each fold's training
rows and scored on its validation rows, the same rows as the config's runs, paired with it the same
way: whether a config is ahead of them, judged without a test row.

    python benchmarks/choose_by_repeated_cv.py --csv path/to/2020-10-21-dragon-data.csv --folds 5 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dragon_lightning.baselines import fitted, sklearn_peers
from dragon_lightning.commands import cli_main
from dragon_lightning.data import DragonDataModule
from dragon_lightning.search.cv import AT_REFIT, paired_difference

ROOT = Path(__file__).resolve().parent.parent
MLP = ["--model", "dragon_lightning.models.MLPClassifier"]
"""A candidate of another model class: the config's optimizer and data options carry over."""
LR_001 = ["--model.init_args.optimizer.init_args.lr", "0.01"]
FINAL = ["--checkpoint.monitor", "null"]
"""Validate the weights training ends with, not the best epoch's."""
SEEDS_5 = ["--seeds", "5"]
"""Five models a fold, with seeds seed_everything to +4, scored as their average: what ``--refit_seeds 5`` ships.
Its first model is the config's own run, so the difference is the averaging's alone."""
SWA_1E_3 = ["--trainer.callbacks+=StochasticWeightAveraging", "--trainer.callbacks.swa_lrs", "0.001"]


def hidden(sizes: str) -> list[str]:
    return ["--model.init_args.hidden_sizes", sizes]


def cosine(epochs: int) -> list[str]:
    """A cosine schedule whose step reaches 0 after ``epochs`` epochs."""
    return ["--model.init_args.scheduler", "torch.optim.lr_scheduler.CosineAnnealingLR",
            "--model.init_args.scheduler.init_args.T_max", str(epochs)]  # fmt: skip


def noise(std: str) -> list[str]:
    return ["--model.init_args.input_noise", std]


CANDIDATES: dict[str, dict[str, list[str]]] = {
    "configs/color_mlp.yaml": {
        "the config": [],
        "input noise 0.1": ["--model.init_args.input_noise", "0.1"],
        "input noise 0.3": ["--model.init_args.input_noise", "0.3"],
        "label smoothing 0.1": ["--model.init_args.label_smoothing", "0.1"],
        "Adam weight decay 1e-3": ["--model.init_args.optimizer.init_args.weight_decay", "0.001"],
        "input noise 0.05": noise("0.05"),
        "MLP [32, 32], lr 0.01, noise 0.1": [*hidden("[32, 32]"), *LR_001, *noise("0.1")],
        "MLP [64, 64], lr 0.01, noise 0.1": [*hidden("[64, 64]"), *LR_001, *noise("0.1")],
    },
    "configs/color_recommended.yaml": {
        "the config": [],
        "Adam weight decay 1e-4": ["--model.init_args.optimizer.init_args.weight_decay", "0.0001"],
        "dropout 0.1": ["--model.init_args.dropout", "0.1"],
        "seed ensemble of 5": SEEDS_5,
        # The region the sweep of configs/sweeps/color_recommended.yaml (5 folds of 2 draws) found best.
        "batch size 54": ["--data.batch_size", "54"],
        "MLP [128, 128], batch size 54": [*hidden("[128, 128]"), "--data.batch_size", "54"],
        # Stochastic weight averaging puts its average in when training ends: judged on final weights,
        # against the config's own final weights (both rows' differences are on the same folds).
        "final weights": FINAL,
        "final weights, SWA lr 1e-3": [*FINAL, *SWA_1E_3],
        # Final weights that settle: the step falls to 0 over the config's 120 epochs, and no epoch is chosen.
        "final weights, cosine schedule": [*FINAL, *cosine(120)],
        "Adam 1e-2 (its step before)": ["--model.init_args.optimizer.init_args.lr", "0.01"],
        "Adam 1e-3": ["--model.init_args.optimizer.init_args.lr", "0.001"],
        "input noise 0.2": noise("0.2"),
        "batch size 32": ["--data.batch_size", "32"],
    },
    "configs/fire_recommended.yaml": {
        "the config": [],
        "80 epochs": ["--trainer.max_epochs", "80"],
        "batch size 32": ["--data.batch_size", "32"],
        "seed ensemble of 5": SEEDS_5,
        "final weights": FINAL,
    },
    "configs/fire_logistic.yaml": {
        "the config": [],
        "final weights": FINAL,
        "final weights, input noise 0.1": [*FINAL, *noise("0.1")],
        "final weights, input noise 0.2": [*FINAL, *noise("0.2")],
        "input noise 0.1": ["--model.init_args.input_noise", "0.1"],
        "input noise 0.15": noise("0.15"),
        "input noise 0.2": noise("0.2"),
        "input noise 0.25": noise("0.25"),
        "input noise 0.3": noise("0.3"),
        "label smoothing 0.05": ["--model.init_args.label_smoothing", "0.05"],
        "Adam weight decay 1e-3": ["--model.init_args.optimizer.init_args.weight_decay", "0.001"],
        "MLP [32, 32], lr 0.01": [*MLP, *hidden("[32, 32]"), *LR_001],
        "MLP [32, 32], lr 0.01, noise 0.1": [*MLP, *hidden("[32, 32]"), *LR_001, *noise("0.1")],
        "MLP [32, 32], lr 0.01, noise 0.2": [*MLP, *hidden("[32, 32]"), *LR_001, *noise("0.2")],
        "MLP [32, 32], lr 0.01, noise 0.3": [*MLP, *hidden("[32, 32]"), *LR_001, *noise("0.3")],
        "MLP [32, 32], lr 0.01, noise 0.4": [*MLP, *hidden("[32, 32]"), *LR_001, *noise("0.4")],
        "MLP [64, 64], lr 0.01, noise 0.1": [*MLP, *hidden("[64, 64]"), *LR_001, *noise("0.1")],
        "MLP [10, 20, 1000], lr 0.003, noise 0.1": [
            *MLP,
            *hidden("[10, 20, 1000]"),
            "--model.init_args.optimizer.init_args.lr",
            "0.003",
            *noise("0.1"),
        ],
    },
}
METRICS = ("val/loss", "val/acc")


def run_cv(config: str, overrides: list[str], folds: int, repeats: int, csv: str | None, folder: Path) -> pd.DataFrame:
    """One ``cv`` of ``config`` with ``overrides``; its ``cv_results.csv`` (a row per fold and draw)."""
    args = ["cv", "--config", str(ROOT / config), *overrides, "--folds", str(folds), "--repeats", str(repeats)]
    args += ["--output_dir", str(folder), "--trainer.default_root_dir", str(folder.parent)]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--figures.enabled", "false"]
    if csv:
        args += ["--data.csv_path", csv]
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(args)
    return pd.read_csv(folder / "cv_results.csv")


def judged(table: pd.DataFrame, judge: str) -> pd.DataFrame:
    """``cv_results.csv`` with each metric as ``judge`` scores it: ``refit`` takes the "at refit epochs"
    columns where cv wrote them."""
    return table.assign(**{m: table[m + AT_REFIT] for m in METRICS if judge == "refit" and m + AT_REFIT in table})


def over_seeds(tables: list[pd.DataFrame], repeats: int) -> pd.DataFrame:
    """Results for several data seeds as one table: each seed's draws of folds numbered after the last
    seed's, so that paired differences and their standard errors span the seeds (independent draws of
    toes, split and folds)."""
    return pd.concat([table.assign(repeat=table["repeat"] + index * repeats) for index, table in enumerate(tables)])


def fold_data(config: str, csv: str | None, folds: int, fold: int, repeat: int, seed: int | None = None) -> DragonDataModule:
    """The data module of ``cv``'s run for ``fold`` of draw ``repeat`` of ``config`` (with ``seed`` as its
    ``--seed_everything``), set up for fit."""
    settings = yaml.safe_load((ROOT / config).read_text())
    options = settings.get("data") or {}
    seed = options.get("seed", settings.get("seed_everything", 0) if seed is None else seed)  # cv seeds the data as fit does
    data = DragonDataModule(
        **{**options, "csv_path": csv, "seed": seed, "data_dir": None}, n_folds=folds, fold=fold, fold_draw=repeat
    )
    data.prepare_data()
    data.setup("fit")
    return data


def peer_results(config: str, folds: int, repeats: int, csv: str | None, seed: int | None = None) -> dict[str, pd.DataFrame]:
    """scikit-learn's peers on the folds ``cv`` cuts for ``config``: a table per peer, a row per fold and
    draw, as ``cv_results.csv`` has them (log-loss for peers that give probabilities, else NaN)."""
    from sklearn.metrics import log_loss

    rows: dict[str, list[dict]] = {}
    for repeat in range(repeats):
        for fold in range(folds):
            data = fold_data(config, csv, folds, fold, repeat, seed)
            (train, train_labels), (val, val_labels) = (tuple(t.numpy() for t in data.splits[s]) for s in ("train", "val"))
            for name, model in sklearn_peers(data.seed).items():
                model = fitted(model, train, train_labels)
                loss = (
                    log_loss(val_labels, model.predict_proba(val), labels=list(range(data.num_classes)))
                    if hasattr(model, "predict_proba")
                    else np.nan
                )
                accuracy = float((model.predict(val) == val_labels).mean())
                rows.setdefault(name, []).append({"repeat": repeat, "fold": fold, "val/loss": loss, "val/acc": accuracy})
    return {f"scikit-learn {name}": pd.DataFrame(table) for name, table in rows.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="a dragon CSV (default: generated dragons)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="draws of folds (at least 2, for a standard error)")
    parser.add_argument("--configs", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--candidates", nargs="*", help="only these candidates (names as in the table)")
    parser.add_argument("--peers", action="store_true", help="also score scikit-learn's peers on the same folds")
    parser.add_argument(
        "--baseline",
        default="the config",
        help="the candidate every difference is taken from",
    )
    parser.add_argument(
        "--judge",
        choices=("refit", "kept"),
        default="refit",
        help="score each fold after the median kept epochs, as the refit trains (refit), or at its own best epoch (kept)",
    )
    parser.add_argument(
        "--data-seeds",
        nargs="+",
        type=int,
        help="run everything once per seed (--seed_everything: another toes draw, split and folds) and pair "
        "over all of them: each seed's draws count as further draws (default: the config's seed alone)",
    )
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="fit options for every run (last)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    options = parser.parse_args(argv)
    rows = []
    seeds = options.data_seeds or [None]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        for config in options.configs:
            results: dict[str, pd.DataFrame] = {}
            for name, overrides in CANDIDATES[config].items():
                if options.candidates and name != "the config" and name not in options.candidates:
                    continue
                tables = []
                for index, seed in enumerate(seeds):
                    folder = Path(root) / f"{Path(config).stem}-{len(results)}-{index}" / "cv"
                    seeded = [*overrides, *options.extra, *([] if seed is None else ["--seed_everything", str(seed)])]
                    tables.append(
                        judged(run_cv(config, seeded, options.folds, options.repeats, options.csv, folder), options.judge)
                    )
                results[name] = over_seeds(tables, options.repeats)
                print(f"[{time.perf_counter() - started:.0f}s] {config}: {name}", file=sys.stderr, flush=True)
            if options.peers:
                peers = [peer_results(config, options.folds, options.repeats, options.csv, seed) for seed in seeds]
                results.update({name: over_seeds([each[name] for each in peers], options.repeats) for name in peers[0]})
                print(f"[{time.perf_counter() - started:.0f}s] {config}: scikit-learn's peers", file=sys.stderr, flush=True)
            for name, table in results.items():
                row = {"config": config, "candidate": name}
                for metric in METRICS:
                    row[metric] = float(table[metric].mean())
                    difference, error = (
                        paired_difference(table, results[options.baseline], metric)[:2]
                        if table[metric].notna().all()
                        else (np.nan, np.nan)  # a peer without probabilities has no loss
                    )
                    row[f"{metric} difference"], row[f"{metric} standard error"] = difference, error
                rows.append(row)
    data = f" for each of the data seeds {options.data_seeds}" if options.data_seeds else ""
    print(f"{options.repeats} draws of {options.folds} folds on the non-test rows{data}, judged at the {options.judge} epochs; "
          f"differences are the candidate minus {options.baseline} on the same folds, with their standard error\n")  # fmt: skip
    print("| config | candidate | val/loss | difference (SE) | val/acc | difference (SE) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        loss, acc = (f"{row[f'{m} difference']:+.4f} ({row[f'{m} standard error']:.4f})" for m in METRICS)
        print(f"| {row['config']} | {row['candidate']} | {row['val/loss']:.4f} | {loss} | {row['val/acc']:.4f} | {acc} |")
    if options.json:
        options.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
