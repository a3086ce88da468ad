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
    from adadf_core.datasets import DATASET_NAMES
    from adadf_core.methods import method_names

    assert cli.METHOD_HELP == method_names() and cli.DATASET_HELP == DATASET_NAMES
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert " | ".join(method_names()) in " ".join(out.split())
