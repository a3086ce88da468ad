"""`adadf train` and `adadf evaluate` through the dispatcher; --set parsing and its errors."""
import json
import re

import pytest

from adadf_core import cli
from adadf_core.cli import parse_value


def train_args(root, run_dir, *extra):
    return ["train", "--dataset", "synthfer", "--data-root", str(root), "--method", "baseline",
            "--epochs", "1", "--run-dir", str(run_dir), "--set", "image_size=32", "--set", "recipe=light",
            "--set", "batch_size=16", "--set", "max_train_samples=32", "--set", "max_test_samples=24",
            "--set", "progress=false", *extra]


@pytest.mark.slow
def test_train_then_evaluate(tiny_synthfer, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(train_args(tiny_synthfer, run_dir)) == 0
    out = capsys.readouterr().out
    assert "best test accuracy over epochs" in out and "last-epoch test accuracy" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["method"] == "baseline"
    assert not (run_dir / "class_distributions.npy").exists()     # the baseline has no D
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["max_train_samples"] == 32 and config["progress"] is False

    assert cli.main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"^accuracy: ([0-9.]+)$", out, re.M).group(1))
    assert acc == pytest.approx(summary["last_acc"], abs=1e-6)
    assert "confusion" in out and "per-class accuracy" in out
    # the protocol card of the run's record: every selection labelled
    assert "(selected on the test set)" in out and "mean of the last 1 epochs" in out
    last = float(re.search(r"accuracy: best epoch .*last epoch ([0-9.]+) %", out).group(1))
    assert last == pytest.approx(100 * summary["last_acc"], abs=0.006)

    # the finished run is not overwritten
    assert cli.main(train_args(tiny_synthfer, run_dir)) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def test_bad_set_key_and_value(tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path / "x"), "--set", "nope=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown TrainConfig field 'nope'" in err and "batch_size" in err
    assert cli.main(["train", "--run-dir", str(tmp_path / "x"), "--set", "epochs=ten"]) == 2
    assert "epochs=ten: expected a value of type int" in capsys.readouterr().err
    assert cli.main(["train", "--run-dir", str(tmp_path / "x"), "--set", "cd_source=sometimes"]) == 2
    assert "cd_source='sometimes' is not valid" in capsys.readouterr().err
    assert cli.main(["train", "--set", "epochs"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_parse_value_types():
    assert parse_value("image_size", "none") is None
    assert parse_value("image_size", "100") == 100
    assert parse_value("crop_batch_quirk", "off") is False
    assert parse_value("progress", "YES") is True
    assert parse_value("lr", "3e-4") == pytest.approx(3e-4)
    assert parse_value("cd_source", "train_pass") == "train_pass"
    with pytest.raises(ValueError, match="type bool"):
        parse_value("resume", "maybe")
    with pytest.raises(ValueError, match="type float"):
        parse_value("lr", "fast")


def test_evaluate_on_missing_folder(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
def test_unavailable_device_is_a_clean_error(tiny_synthfer, tmp_path, capsys):
    code = cli.main(["train", "--data-root", str(tiny_synthfer), "--run-dir", str(tmp_path / "x"),
                     "--set", "device=cuda", "--set", "image_size=32", "--epochs", "1"])
    assert code == 2
    assert "device='cuda' was requested but CUDA is not available" in capsys.readouterr().err


def test_train_help_lists_exactly_the_registered_methods_and_data_sets(capsys):
    """The help text of --method and --dataset (config.py's comments) names the registry's methods and the
    loaders' data sets, in their order: help never imports torch, so it spells them out."""
    from adadf_core.data.classes import DATASET_NAMES
    from adadf_core.methods import method_names

    helps = {name: text for _, name, text in cli.config_fields()}
    assert helps["method"].split(" | ") == list(method_names())
    assert helps["dataset"].split(" | ") == list(DATASET_NAMES)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert " | ".join(method_names()) in " ".join(capsys.readouterr().out.split())


def test_every_field_is_a_flag_with_help_and_the_authors_names_work(tmp_path):
    import dataclasses
    from adadf_core.config import TrainConfig

    documented = {name for _, name, _ in cli.config_fields()}
    assert documented == {f.name for f in dataclasses.fields(TrainConfig)}, "a field without a help comment"
    parser = cli.build_train_parser()
    args = parser.parse_args(["--beta", "5", "--min_weight", "0.3", "--max-weight", "0.9", "--margin_1", "0.1",
                              "--tops", "0.6", "--gamma", "0.8", "--data_path", str(tmp_path), "--num_workers", "2",
                              "--threshold", "0.6", "--no-progress", "--crop-batch-quirk"])
    cfg = cli.config_from_args(args)
    assert (cfg.epoch_threshold, cfg.lambda_min, cfg.lambda_max, cfg.rr_margin, cfg.rr_ratio, cfg.lr_gamma,
            cfg.data_root, cfg.num_workers, cfg.threshold) == (5.0, 0.3, 0.9, 0.1, 0.6, 0.8, str(tmp_path), 2, 0.6)
    assert cfg.progress is False and cfg.crop_batch_quirk is True
    preset = cli.config_from_args(parser.parse_args(["--dataset", "sfew"]))
    assert preset.batch_size == 16 and preset.threshold == 0.5       # flags not given keep the preset


@pytest.mark.parametrize("argv,hint", [(["--bet", "3"], "did you mean --beta"),
                                       (["--min-weigth", "0.3"], "did you mean --min-weight"),
                                       (["--epochs", "x"], "epochs=x: expected a value of type int")])
def test_unknown_or_bad_flags_are_one_line_errors_with_a_hint(argv, hint, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err


def test_version_and_help_without_torch():
    import subprocess
    import sys
    from adadf_core import __version__

    code = ("import sys, contextlib, io\nfrom adadf_core import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--version'], ['train', '--help']):\n"
            "        try: cli.main(argv)\n        except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "adadf --version / train --help imported torch"
    out = subprocess.run([sys.executable, "-m", "adadf_core.cli", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"adadf {__version__}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_option_of_every_command_has_help(command, monkeypatch):
    import argparse

    class Seen(Exception):
        pass

    def capture(self, args=None, namespace=None):
        raise Seen(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(Seen) as seen:
        cli.main([command, "--help"])
    parser = seen.value.args[0]
    missing = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not missing, f"adadf {command}: options without help: {missing}"


def test_a_mistyped_command_data_set_field_or_choice_gets_a_did_you_mean(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    for argv, expected in ((["--dataset", "RAF"], "unknown dataset 'RAF'; expected one of"),
                           (["--set", "lamda_min=0.1"], "unknown TrainConfig field 'lamda_min'; did you mean 'lambda_min'"),
                           (["--method", "adaDF"], "method='adaDF' is not valid")):
        assert cli.main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and "did you mean" in err and err.count("\n") == 1, err


def test_train_help_shows_each_data_set_s_preset_where_it_differs_from_the_default(capsys):
    from adadf_core.config import PRESETS
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"training epochs [default: 75; data-set presets: synthfer: {PRESETS['synthfer']['epochs']}]" in text
    assert f"sfew: {PRESETS['sfew']['batch_size']}" in text and "raf: 64" not in text    # only what differs


def test_train_names_what_it_will_run_and_refuses_missing_weights_before_loading_data(tmp_path, capsys):
    missing = tmp_path / "weights.pth"
    assert cli.main(["train", "--pretrained", str(missing), "--data-root", str(tmp_path / "no-data")]) == 2
    err = capsys.readouterr().err
    assert f"--pretrained {missing}: no such file" in err and "synthfer-backbone" in err and "no-data" not in err
    cfg = cli.config_from_args(cli.build_train_parser().parse_args(["--seed", "3"]))
    line = cli.settings_line(cfg)
    assert line.startswith("adadf train: adadf on synthfer, 6 epochs, batch 64, 48 px") and "seed 3" in line
    assert cli.train_weights(cfg) is cfg
    assert "training from scratch; make reproduce starts every SynthFER run from --pretrained synthfer-backbone" \
        in capsys.readouterr().out                                  # stdout: stderr stays for one-line errors
