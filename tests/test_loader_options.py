"""Loader defaults (issue 12): the CPU keeps today's single-process loading; on CUDA workers, kept alive,
pinned memory."""
import pytest
import torch

from adadf_core.config import make_config, resolve_config
from adadf_core.engine.loaders import default_num_workers, loader_options


def test_cpu_default_is_no_worker_process():
    cfg = resolve_config(make_config("synthfer"))
    assert cfg.num_workers is None
    assert loader_options(cfg, torch.device("cpu")) == dict(num_workers=0, pin_memory=False,
                                                            persistent_workers=False)


def test_cuda_default_uses_kept_alive_workers_and_pinned_memory(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    cfg = resolve_config(make_config("raf"))
    opts = loader_options(cfg, torch.device("cuda"))
    assert opts == dict(num_workers=8, pin_memory=True, persistent_workers=True, prefetch_factor=4)
    assert default_num_workers(torch.device("cuda"), world=8) == 4     # 32 cores shared by 8 processes
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_num_workers(torch.device("cuda"), world=2) == 1


def test_an_explicit_worker_count_wins():
    cfg = resolve_config(make_config("raf", num_workers=3))
    opts = loader_options(cfg, torch.device("cpu"))
    assert opts["num_workers"] == 3 and opts["persistent_workers"] and opts["prefetch_factor"] == 2
    with pytest.raises(ValueError, match="num_workers=-2 is not valid; expected none or an integer >= 0"):
        resolve_config(make_config("raf", num_workers=-2))
