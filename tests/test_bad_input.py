"""Bad input through the real CLI: one readable line, exit status 2, and no file created or changed."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from clihelpers import ROOT, config, expect_one_line_error, files_under, in_root, last_checkpoint, predict_args, run, short_fit

HEADER = "testScore,bodyLength,mountainRange,color,diet,breathesFire"
GOOD_ROW = "50.1,200.5,Bavarian,Blue,Carnivore,1"


def dragons_csv(rows: int = 60) -> str:
    colors, fire = ["Blue", "Red", "Yellow"], [1, 0]
    lines = [f"{i % 100},{180 + i % 40},Julian,{colors[i % 3]},Omnivore,{fire[i % 2]}" for i in range(rows)]
    return "\n".join([HEADER, *lines]) + "\n"


def with_row(row: str, line: int = 4) -> str:
    lines = dragons_csv().splitlines()
    lines[line - 1] = row
    return "\n".join(lines) + "\n"


CSV_CASES = {
    "missing file": (None, "no such CSV file"),
    "a directory": ("<dir>", "is a directory"),
    "empty file": ("", "file is empty"),
    "header only": (HEADER + "\n", "has a header but no data rows"),
    "missing column": (dragons_csv().replace("diet,", "food,"), "missing column 'diet'"),
    "wrong delimiter": (dragons_csv().replace(",", ";"), "is the file comma-separated?"),
    # As a spreadsheet saves it where the comma is the decimal mark: it was "a comma too many" on line 2.
    "semicolons and decimal commas": (dragons_csv().replace(",", ";").replace(";180", ";180,5"), "is the file comma-separated?"),
    "non-numeric value": (with_row("50,long,Julian,Blue,Omnivore,1"), "line 4, column 'bodyLength': 'long' is not a number"),
    "empty cell": (with_row("50,,Julian,Blue,Omnivore,1"), "line 4, column 'bodyLength': empty or missing value"),
    "NaN": (with_row("NaN,200,Julian,Blue,Omnivore,1"), "line 4, column 'testScore': empty or missing value"),
    "inf": (with_row("50,inf,Julian,Blue,Omnivore,1"), "line 4, column 'bodyLength': inf is not a finite number"),
    "unknown category": (with_row("50,200,Julian,Green,Omnivore,1"), "line 4, column 'color': unknown category 'Green'"),
    "breathesFire of 2": (with_row("50,200,Julian,Blue,Omnivore,2"), "line 4, column 'breathesFire': 2 is not 0 or 1"),
    "too few rows": ("\n".join([HEADER, GOOD_ROW, GOOD_ROW.replace("Blue", "Red")]) + "\n", "2 rows are too few"),
    "class absent from training": (
        "\n".join([HEADER, *[GOOD_ROW] * 30, *[GOOD_ROW.replace("Blue", "Yellow")] * 30, GOOD_ROW.replace("Blue", "Red")]) + "\n",
        "class 'Red' has 1 rows, too few to leave one for training after test_fraction=0.6",
    ),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_bad_csv(case, scratch, capfd):
    content, message = CSV_CASES[case]
    path = scratch / "dragons.csv"
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    before = files_under(scratch)
    args = ["fit", "--config", config("color_mlp.yaml"), "--data.csv_path", str(path), "--data.test_fraction", "0.6"]
    expect_one_line_error(capfd, scratch, before, args, f"{path}: ", message)


OPTION_CASES = {
    "unknown model": (["--model", "Forest"], "--model must name a model"),
    "unknown task": (["--data.task", "size"], "--data.task"),
    "zero batch size": (
        ["--data.batch_size", "0"],
        "--data.batch_size: Not of type PositiveInt: 0 does not conform to restriction v>0",
    ),
    "negative batch size": (
        ["--data.batch_size", "-4"],
        "--data.batch_size: Not of type PositiveInt: -4 does not conform to restriction v>0",
    ),
    "test fraction of 1": (
        ["--data.test_fraction", "1"],
        "--data.test_fraction: Not of type OpenUnitInterval: 1 does not conform to restriction v>0 and v<1",
    ),
    "negative val fraction": (
        ["--data.val_fraction", "-0.1"],
        "--data.val_fraction: Not of type ClosedOpenUnitInterval: -0.1 does not conform to restriction v>=0 and v<1",
    ),
    "hidden size of zero": (
        ["--model.hidden_sizes", "[10, 0]"],
        "--model.init_args.hidden_sizes: Not of type PositiveInt: 0 does not conform to restriction v>0",
    ),
    "no dragons": (
        ["--data.n_dragons", "0"],
        "--data.n_dragons: Not of type DragonCount: 0 does not conform to restriction v>=1 and v<=30000000",
    ),
    "not a number": (["--trainer.max_epochs", "many"], "--trainer.max_epochs: invalid value many"),
    # argparse would take a prefix of one option as that option: a typo, refused (jsonargparse 5's default).
    "an option cut short": (["--trainer.max_epoch", "1"], "unrecognized arguments: --trainer.max_epoch 1"),
    # jsonargparse hands a model's init_args null as they come; the model's signature says which may be.
    "no hidden layers list": (["--model.init_args.hidden_sizes", "null"], "--model.init_args.hidden_sizes may not be null"),
    "no activation": (["--model.init_args.activation", "null"], "--model.init_args.activation may not be null"),
    "missing config": (["--config", "nowhere.yaml"], "--config: File does not exist"),
    "negative epochs between rankings": (
        ["--checkpoint.every_n_epochs", "-1"],
        "--checkpoint.every_n_epochs: Not of type NonNegativeInt: -1 does not conform to restriction v>=0",
    ),
    "negative steps between resume points": (
        ["--checkpoint.every_n_train_steps", "-5"],
        "--checkpoint.every_n_train_steps: Not of type NonNegativeInt: does not conform to restriction v>=0 (given -5)",
    ),
    "a callback without its required argument": (
        ["--trainer.callbacks+=EarlyStopping"],
        "--trainer.callbacks EarlyStopping: the following arguments are required: monitor",
    ),
    # jsonargparse first tries a class name as a config file's path ("Expected a path"): the name is what is wrong.
    "a callback class name with a typo": (
        ["--trainer.callbacks+=EarlyStoping"],
        "--trainer.callbacks: no class EarlyStoping to use here; name one that --help lists",
    ),
    "an optimizer class name with a typo": (
        ["--model.init_args.optimizer", "SGDD"],
        "--model.init_args.optimizer: no class SGDD to use here; name one that --model.help MLPClassifier lists",
    ),
    "a logger that is no logger": (
        ["--trainer.logger", "torch.optim.SGD"],
        "--trainer.logger: torch.optim.SGD is not a subclass of Logger",
    ),
    "an optimizer that is no optimizer": (
        ["--model.init_args.optimizer", "torch.nn.Linear"],
        "--model.init_args.optimizer: torch.nn.Linear is not a subclass of Optimizer",
    ),
    "a scheduler without its required argument": (
        ["--model.init_args.scheduler", "torch.optim.lr_scheduler.StepLR"],
        "--model.init_args.scheduler: the following arguments are required: step_size",
    ),
    "a learning rate that is not a number": (
        ["--model.init_args.optimizer.init_args.lr", "abc"],
        "--model.init_args.optimizer.init_args.lr: invalid value abc",
    ),
    "a logger argument of the wrong type": (
        ["--trainer.logger", "CSVLogger", "--trainer.logger.init_args.flush_logs_every_n_steps", "x"],
        "--trainer.logger.init_args.flush_logs_every_n_steps: Expected a <class 'int'>. Got value: x",
    ),
    "clipping the online perceptron": (
        ["--model", "Perceptron", "--model.online", "true", "--trainer.gradient_clip_val", "1"],
        "--trainer.gradient_clip_val needs an optimizer that Lightning runs: --model.init_args.online true",
    ),
    "accumulating the online perceptron": (
        ["--model", "Perceptron", "--model.online", "true", "--trainer.accumulate_grad_batches", "2"],
        "--trainer.accumulate_grad_batches needs an optimizer that Lightning runs",
    ),
}


@pytest.mark.parametrize(
    "section, options",
    [("data: 5", []), ("data: null", []), ("checkpoint: [val/acc]", []), ("figures: 0", ["--trainer.max_epochs", "1"])],
)
def test_a_section_of_options_given_one_value_in_a_config_is_one_line(section, options, scratch, capfd):
    """jsonargparse takes such a value as the whole section; the run met it as a traceback (found by fuzzing)."""
    (scratch / "config.yaml").write_text(section + "\n")
    name = section.split(":")[0]
    args = ["fit", "--config", str(scratch / "config.yaml"), *options]
    expect_one_line_error(
        capfd, scratch, files_under(scratch), args, f"--{name}: a config gave it one value, not a mapping of its options"
    )


@pytest.mark.parametrize(
    "command, options, message",
    [
        (
            ["fit"],
            ["--trainer.max_epochs", "2", "--config", config("fire_logistic.yaml")],
            f"--trainer.max_epochs 2 comes before --config {config('fire_logistic.yaml')}, which sets it to 40; give --config first",
        ),
        (
            ["fit"],
            ["--model", "LogisticRegression", "--config", config("color_mlp.yaml")],
            "--model dragon_lightning.models.LogisticRegression comes before --config",
        ),
        (  # between two configs: the second overrides the first, not what was typed between them
            ["cv", "--folds", "2"],
            [*["--config", config("color_mlp.yaml"), "--trainer.max_epochs", "3", "--config"], config("color_mlp_plateau.yaml")],
            "--trainer.max_epochs 3 comes before --config",
        ),
        (["export", "--ckpt_path", "best"], ["--output", "b.onnx", "--config", "export.yaml"], "--output b.onnx comes before"),
    ],
)
def test_an_option_a_later_config_would_override_is_one_line(command, options, message, scratch, capfd):
    """jsonargparse applies options in order: the config's value would win without a word (LightningCLI's
    commonest surprise). A later config may override an earlier one; an option the config leaves alone
    may come before it."""
    (scratch / "export.yaml").write_text("output: a.onnx\n")
    expect_one_line_error(capfd, scratch, files_under(scratch), [*command, *options], message)


def test_a_config_may_override_an_earlier_config_and_leave_alone_what_came_before(scratch):
    cli = run(
        *["fit", "--data.n_dragons", "300", "--config", config("color_mlp.yaml"), "--config", config("color_mlp_plateau.yaml")],
        *["--trainer.fast_dev_run", "true"],
    )
    assert (cli.datamodule.hparams.n_dragons, cli.config.fit.trainer.max_epochs) == (300, 300)


@pytest.mark.parametrize("case", OPTION_CASES)
def test_bad_option(case, scratch, capfd):
    options, message = OPTION_CASES[case]
    args = ["fit", "--config", config("color_mlp.yaml"), *options]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message)


@pytest.fixture(scope="module")
def color_mlp_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    cli = short_fit(
        "color_mlp.yaml",
        1,
        "--test_after_fit",
        "false",
        *in_root(root),
    )
    return last_checkpoint(cli)


CHECKPOINT_CASES = {
    "missing": (lambda good, folder: folder / "nowhere.ckpt", [], "no such checkpoint file"),
    "truncated": (lambda good, folder: _write(folder / "cut.ckpt", good.read_bytes()[:2000]), [], "not a readable checkpoint"),
    "corrupt": (lambda good, folder: _write(folder / "junk.ckpt", b"not a checkpoint"), [], "not a readable checkpoint"),
    "a folder": (lambda good, folder: folder, [], "is a directory, expected a checkpoint file"),
    "a run's folder": (lambda good, folder: good.parent.parent, [], "is a folder; give a checkpoint file, such as <good>"),
    "its checkpoints": (lambda good, folder: good.parent, [], "is a folder; give a checkpoint file, such as <good>"),
    "other task": (lambda good, folder: good, ["--data.task", "fire"], "was trained for task 'color', but --data.task is 'fire'"),
    "other model": (
        lambda good, folder: good,
        ["--config", config("color_perceptron.yaml")],
        "holds a MLPClassifier, but the config asks for Perceptron",
    ),
}


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_bad_checkpoint(case, color_mlp_checkpoint, scratch, capfd):
    make_path, options, message = CHECKPOINT_CASES[case]
    path = make_path(color_mlp_checkpoint, scratch)
    args = ["test", "--config", config("color_mlp.yaml"), "--ckpt_path", str(path), *options]
    message = message.replace("<good>", str(color_mlp_checkpoint))  # a folder holding it is named with it
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"{path}: ", message)


def test_resuming_keeps_the_splits(color_mlp_checkpoint, scratch, capfd):
    trained = torch.load(color_mlp_checkpoint, weights_only=True)["datamodule_hyper_parameters"]["seed"]
    args = [
        "fit",
        "--config",
        config("color_mlp.yaml"),
        "--ckpt_path",
        str(color_mlp_checkpoint),
        "--data.seed",
        str(trained + 1),
        "--data.standardize",
        "false",
    ]
    expect_one_line_error(
        capfd,
        scratch,
        files_under(scratch),
        args,
        f"{color_mlp_checkpoint}: was trained with --data.seed {trained} (now {trained + 1}) and "
        "--data.standardize true (now false); resume with the same data options",
    )


def test_a_csv_edited_since_training_is_refused_for_its_rows(color_mlp_checkpoint, scratch, capfd):
    """The same data options on a CSV edited since the run was trained would resume on other rows, or
    test on rows it trained on as if held out: the checkpoint holds the rows' SHA-256. The file as it
    was resumes; another draw (``--data.seed``) is other rows by choice."""
    (generated,) = (color_mlp_checkpoint.parents[3] / "data").glob("*.csv")
    table = scratch / "dragons.csv"
    table.write_bytes(generated.read_bytes())
    runs = scratch / "runs"
    resumed = ["--data.csv_path", str(table), "--trainer.default_root_dir", str(runs), "--test_after_fit", "false"]
    checkpoint = last_checkpoint(short_fit("color_mlp.yaml", 1, *resumed))
    resume = ["fit", "--config", config("color_mlp.yaml"), "--trainer.max_epochs", "2", *resumed, "--ckpt_path", str(checkpoint)]
    lines = generated.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",", ",1", 1)  # the first dragon's second field, a digit longer
    table.write_text("".join(lines))
    capfd.readouterr()
    changed = f"{checkpoint}: was trained on other rows than {table} gives now"
    expect_one_line_error(capfd, scratch, files_under(scratch), resume, changed, "resume with the rows as they were")
    test = ["test", "--ckpt_path", str(checkpoint), "--data.csv_path", str(table), "--trainer.default_root_dir", str(runs)]
    expect_one_line_error(capfd, scratch, files_under(scratch), test, changed, "its test split would not be the rows")
    assert run(*test, "--data.seed", "7").datamodule.seed == 7
    table.write_bytes(generated.read_bytes())
    assert run(*resume).trainer.current_epoch == 2


def test_predictions_never_overwrite_a_different_file(color_mlp_checkpoint, scratch, capfd):
    dragons = scratch / "dragons.csv"
    dragons.write_text("numberToes,bodyLength\n6,170\n")
    output = scratch / "predictions.csv"
    output.write_text("my earlier results\n")
    args = [
        *predict_args(config("color_mlp.yaml"), str(color_mlp_checkpoint), str(dragons), str(output)),
        "--trainer.logger",
        "false",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run(*args)
    assert exit_info.value.code == 2
    assert (
        f"--predictions.output_path {output}: exists; choose another file or pass --predictions.overwrite true"
        in capfd.readouterr().err
    )
    assert output.read_text() == "my earlier results\n"
    assert sorted(p.name for p in scratch.iterdir()) == ["dragons.csv", "predictions.csv"]
    run(*args, "--predictions.overwrite", "true")
    assert output.read_text().startswith("numberToes,bodyLength,predicted,p_Blue,p_Red,p_Yellow")


def test_the_example_dragons_are_predicted_and_a_raw_table_is_one_line_saying_why_not(color_mlp_checkpoint, scratch, capfd):
    output = scratch / "predictions.csv"
    example = ROOT / "examples" / "dragons_to_predict.csv"
    run(
        *predict_args(config("color_mlp.yaml"), str(color_mlp_checkpoint), str(example), str(output)), "--trainer.logger", "false"
    )
    assert len(pd.read_csv(output)) == len(pd.read_csv(example))
    capfd.readouterr()
    raw = scratch / "raw.csv"
    raw.write_text(dragons_csv())  # the tutorial's own columns: testScore, bodyLength, ..., breathesFire
    args = predict_args(config("color_mlp.yaml"), str(color_mlp_checkpoint), str(raw), str(scratch / "none.csv"))
    message = f"{raw}: missing column 'numberToes'; the header has {HEADER.replace(',', ', ')}: a raw dragon table"
    expect_one_line_error(capfd, scratch, files_under(scratch), args, message, "examples/dragons_to_predict.csv")


def test_resuming_with_no_earlier_run_says_so(scratch, capfd):
    args = ["fit", "--config", config("color_mlp.yaml"), "--ckpt_path", "last"]
    expect_one_line_error(capfd, scratch, {}, args, "--ckpt_path last: no run under lightning_logs has checkpoints/last.ckpt")


def test_validate_without_validation_rows_is_one_line(color_mlp_checkpoint, scratch, capfd):
    args = [
        "validate",
        "--config",
        config("color_mlp.yaml"),
        "--ckpt_path",
        str(color_mlp_checkpoint),
        "--data.val_fraction",
        "0",
    ]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, "validate: --data.val_fraction 0 holds no validation rows")


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_an_evaluation_without_a_checkpoint_is_one_line_not_metrics_of_untrained_weights(command, scratch, capfd):
    (scratch / "dragons.csv").write_text("numberToes,bodyLength\n6,170\n")
    args = [command, "--config", config("color_mlp.yaml"), "--data.predict_csv", "dragons.csv"]
    expect_one_line_error(capfd, scratch, files_under(scratch), args, f"{command} needs --ckpt_path: the trained checkpoint")
