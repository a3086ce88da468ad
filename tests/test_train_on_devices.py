"""Independent runs concurrently, one process per device (issue 12): the same runs as in sequence."""
import pytest

from adadf_core.config import make_config, resolve_config
from adadf_core.studies.experiments import parse_devices, train_many, train_on_devices


def tiny(root, seed):
    return resolve_config(make_config("synthfer", data_root=str(root), method="baseline", image_size=16,
                                      batch_size=8, epochs=1, recipe="light", track_samples=0, progress=False,
                                      num_threads=1, seed=seed))


def rows(run):
    return run.metrics.drop(columns=["seconds"])


@pytest.mark.slow
def test_two_cpu_processes_give_the_sequential_runs(tiny_synthfer, tmp_path, monkeypatch, capsys):
    """``train_many`` under ``$ADADF_DEVICES`` (what ``adadf reproduce --devices`` sets for the notebooks)
    hands the runs to ``train_on_devices``: the same folders and the same numbers as in sequence."""
    cfgs = [tiny(tiny_synthfer, seed) for seed in (0, 1, 2)]
    monkeypatch.setenv("ADADF_DEVICES", "cpu,cpu")
    together = train_many(cfgs, tmp_path / "together", desc="seeds")
    assert "seeds: 3 runs (3 to train) on 2 devices (cpu, cpu)" in capsys.readouterr().out
    monkeypatch.delenv("ADADF_DEVICES")
    apart = train_many(cfgs, tmp_path / "apart")
    assert [r.path.name for r in together] == [r.path.name for r in apart]
    for a, b in zip(together, apart):
        assert rows(a).equals(rows(b))            # every column but the timing, NaN where a method has none
    monkeypatch.setenv("ADADF_DEVICES", "cpu,cpu")
    again = train_many(cfgs, tmp_path / "together", desc="seeds")      # all finished: reused, no processes
    assert "seeds: 3 runs (0 to train)" in capsys.readouterr().out
    assert [r.path for r in again] == [r.path for r in together]
    with pytest.raises(ValueError, match="devices=\\[\\] is not valid"):
        train_on_devices(cfgs, tmp_path / "none", [])


def test_device_lists_are_parsed_and_checked():
    assert parse_devices(" cuda:0, CUDA:1 ,") == ["cuda:0", "cuda:1"]
    assert parse_devices(None) == [] and parse_devices(["cpu"]) == ["cpu"]
    with pytest.raises(ValueError, match="'cuda1' is not a device"):
        parse_devices("cuda:0,cuda1")


def test_one_device_from_the_environment_is_said(tiny_synthfer, tmp_path, monkeypatch, capsys):
    """A one-entry $ADADF_DEVICES left in a shell moves every run to that device, and says so."""
    monkeypatch.setenv("ADADF_DEVICES", "cpu")
    run, = train_many([tiny(tiny_synthfer, 0)], tmp_path / "env", desc="seeds")
    assert "seeds: every run on cpu ($ADADF_DEVICES=cpu)" in capsys.readouterr().out
    assert run.config.device == "cpu"
    monkeypatch.delenv("ADADF_DEVICES")
    train_many([tiny(tiny_synthfer, 0)], tmp_path / "env", desc="seeds")       # reused; no variable, no line
    assert "ADADF_DEVICES" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_folder_named_twice_is_trained_once_on_several_devices(tiny_synthfer, tmp_path):
    """Seeds "0,0": in sequence the second config reuses the first run; spread over devices it must not be
    trained twice at once (the second process would find the folder locked)."""
    cfgs = [tiny(tiny_synthfer, 0), tiny(tiny_synthfer, 0), tiny(tiny_synthfer, 1)]
    runs = train_on_devices(cfgs, tmp_path / "twice", ["cpu", "cpu"])
    assert runs[0].path == runs[1].path != runs[2].path and all(r.finished for r in runs)
