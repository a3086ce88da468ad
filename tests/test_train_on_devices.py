"""Independent runs concurrently, one process per device (issue 12): the same runs as in sequence."""
import pytest

from adadf_core.config import make_config, resolve_config
from adadf_core.studies import train_many, train_on_devices


def tiny(root, seed):
    return resolve_config(make_config("synthfer", data_root=str(root), method="baseline", image_size=16,
                                      batch_size=8, epochs=1, recipe="light", track_samples=0, progress=False,
                                      num_threads=1, seed=seed))


def rows(run):
    return run.metrics.drop(columns=["seconds"])


@pytest.mark.slow
def test_two_cpu_processes_give_the_sequential_runs(tiny_synthfer, tmp_path):
    cfgs = [tiny(tiny_synthfer, seed) for seed in (0, 1, 2)]
    together = train_on_devices(cfgs, tmp_path / "together", ["cpu", "cpu"])
    apart = train_many(cfgs, tmp_path / "apart")
    assert [r.path.name for r in together] == [r.path.name for r in apart]
    for a, b in zip(together, apart):
        assert rows(a).equals(rows(b))            # every column but the timing, NaN where a method has none
    with pytest.raises(ValueError, match="devices=\\[\\] is not valid"):
        train_on_devices(cfgs, tmp_path / "none", [])
