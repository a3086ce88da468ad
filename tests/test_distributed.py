"""Several processes (torchrun / DDP, issue 12): the sharding rules by hand, and each semantic with 2 gloo
processes on the CPU (``torch.multiprocessing.spawn``; the whole-run ones through ``train.fit``)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adadf_core.ops import adadf_ops as A
from adadf_core.runtime import distributed
from adadf_core.data.dataset import BalancedUndersampler
from adadf_core.runtime.distributed import Dist, GlobalBatchSampler, shard_batches

C = 7


# ------------------------------------------------------------------------------ rules, no processes
def test_global_batch_sampler_splits_each_global_batch_without_padding():
    order = [9, 3, 5, 1, 0, 8, 2, 7, 6, 4]            # global batches [9 3 5 1] [0 8 2 7]; [6 4] dropped
    shares = [list(GlobalBatchSampler(order, 4, Dist(rank=r, world=2))) for r in (0, 1)]
    assert shares == [[9, 3, 0, 8], [5, 1, 2, 7]]
    assert len(GlobalBatchSampler(order, 4, Dist(rank=1, world=2))) == 4


def test_raf_sized_set_is_never_padded():
    order = list(range(12_271))                        # 12,271 is odd: DistributedSampler would pad it
    shares = [list(GlobalBatchSampler(order, 64, Dist(rank=r, world=2))) for r in (0, 1)]
    seen = shares[0] + shares[1]
    assert len(seen) == len(set(seen)) == 191 * 64     # every full global batch once, nothing twice
    assert set(seen) == set(range(191 * 64))


def test_affectnet_subset_is_drawn_once_then_sharded():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    shares = []
    for r in (0, 1):
        s = GlobalBatchSampler(BalancedUndersampler(labels, seed=3), 4, Dist(rank=r, world=2))
        s.set_epoch(2)
        shares.append(list(s))
    one = BalancedUndersampler(labels, seed=3)
    one.set_epoch(2)
    whole = list(one)                                  # 9 samples: two global batches of 4, one dropped
    assert shares[0] + shares[1] != whole and sorted(shares[0] + shares[1]) == sorted(whole[:8])
    assert shares == [whole[0:2] + whole[4:6], whole[2:4] + whole[6:8]]


def test_test_split_goes_out_in_whole_batches_once():
    assert shard_batches(10, 3, Dist(rank=0, world=2)) == [0, 1, 2, 6, 7, 8]
    assert shard_batches(10, 3, Dist(rank=1, world=2)) == [3, 4, 5, 9]
    assert shard_batches(2, 3, Dist(rank=1, world=2)) == []


def test_batch_must_divide_among_processes():
    with pytest.raises(ValueError, match="batch_size=9 .* multiple of 2"):
        distributed.per_rank_batch(9, Dist(rank=0, world=2))


def test_sync_bn_is_on_by_default_with_several_processes():
    two, one = Dist(rank=0, world=2), distributed.SINGLE
    assert distributed.resolve_sync_bn(None, two) is True and distributed.resolve_sync_bn(False, two) is False
    assert distributed.resolve_sync_bn(True, one) is False          # one process: nothing to synchronise


def test_global_batchnorm_conversion_keeps_weights_keys_and_single_process_numbers():
    from adadf_core.models.networks import build_model
    torch.manual_seed(0)
    model = build_model("adadf", C)
    for m in model.modules():          # distinct statistics, so that a lost buffer would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    x = torch.randn(4, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    want = model(x)["logits"]
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    converted = distributed.convert_to_global_batchnorm(model)
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert sum(isinstance(m, distributed.GlobalBatchNorm) for m in converted.modules()) == n_bn > 20
    after = converted.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(converted(x)["logits"], want)                 # eval: the running statistics
    converted.train()
    plain = nn.BatchNorm2d(5)
    glob = distributed.convert_to_global_batchnorm(nn.BatchNorm2d(5))
    y = torch.randn(6, 5, 3, 3)
    assert torch.equal(glob(y), plain(y))                            # no process group: plain BatchNorm
    assert torch.equal(glob.running_var, plain.running_var)


BN_CASES = {   # name: (BatchNorm class, input shape, rows of process 0, momentum, channels_last)
    "2d": (nn.BatchNorm2d, (8, 3, 4, 5), 4, 0.3, False),
    "2d uneven, momentum None": (nn.BatchNorm2d, (8, 3, 4, 5), 3, None, False),
    "2d channels_last": (nn.BatchNorm2d, (8, 3, 4, 5), 4, 0.3, True),
    "1d": (nn.BatchNorm1d, (10, 3), 5, 0.1, False),
}


def _bn_loss(y):
    return (y * torch.arange(y.numel()).view_as(y).sin()).sum()      # a loss that mixes the rows


def _global_bn_worker(d, out: Path, case, x, w, b):
    cls, _, first, momentum, cl = BN_CASES[case]
    bn = distributed.convert_to_global_batchnorm(cls(x.shape[1], momentum=momentum))
    bn.weight.data.copy_(w), bn.bias.data.copy_(b)
    mine = (x[:first] if d.rank == 0 else x[first:]).clone()
    if cl:
        mine = mine.contiguous(memory_format=torch.channels_last)
    mine.requires_grad_(True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # no warning reaches a user's log
        for _ in range(2):                                              # momentum None: a cumulative average
            y = bn(mine)
    _bn_loss(y).backward()
    torch.save(dict(y=y.detach(), gx=mine.grad, gw=bn.weight.grad, mean=bn.running_mean, var=bn.running_var,
                    cl=y.is_contiguous(memory_format=torch.channels_last) if cl else None), out / f"bn{d.rank}.pt")


@pytest.mark.parametrize("case", list(BN_CASES))
def test_global_batchnorm_on_two_processes_is_batchnorm_of_the_whole_batch(tmp_path, case):
    """Two processes with a share of the rows each: outputs, input gradients, running statistics and the summed
    weight gradients of one BatchNorm over all the rows (torch's SyncBatchNorm has no CPU kernel)."""
    cls, shape, first, momentum, cl = BN_CASES[case]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g) * 3 + 1
    w, b = torch.rand(3, generator=g) + 0.5, torch.randn(3, generator=g)
    spawn(_global_bn_worker, tmp_path, case, x, w, b)
    parts = [torch.load(tmp_path / f"bn{r}.pt") for r in (0, 1)]
    bn = cls(3, momentum=momentum)
    bn.weight.data.copy_(w), bn.bias.data.copy_(b)
    xx = x.clone().requires_grad_(True)
    for _ in range(2):
        y = bn(xx)
    (_bn_loss(y[:first]) + _bn_loss(y[first:])).backward()
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y, atol=1e-5)
    assert torch.allclose(torch.cat([p["gx"] for p in parts]), xx.grad, atol=1e-5)
    assert torch.allclose(parts[0]["gw"] + parts[1]["gw"], bn.weight.grad, atol=1e-4)   # DDP then averages
    for p in parts:
        assert torch.allclose(p["mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(p["var"], bn.running_var, atol=1e-5)      # unbiased, over all the rows
        assert p["cl"] in (None, True)                                   # channels_last stays channels_last
    local = cls(3)(x[:first])                                            # what a process alone would compute
    assert not torch.allclose(parts[0]["y"], local, atol=1e-2)


def test_global_batchnorm_keeps_the_input_check_of_the_layer_it_replaces():
    bn2, bn1 = (distributed.convert_to_global_batchnorm(c(3)) for c in (nn.BatchNorm2d, nn.BatchNorm1d))
    with pytest.raises(ValueError, match="expected a 4D input, got 3D"):
        bn2(torch.randn(2, 3, 4))
    assert bn1(torch.randn(4, 3)).shape == (4, 3) and bn1(torch.randn(4, 3, 5)).shape == (4, 3, 5)


def test_a_resume_that_would_change_the_batchnorm_mode_is_refused(tmp_path):
    from adadf_core.config import make_config
    from adadf_core.runs.writer import RunWriter
    writer, cfg = RunWriter(tmp_path), make_config("synthfer")
    model = nn.Linear(2, 2)
    data = type("Data", (), {"num_classes": 7, "class_names": list("abcdefg"), "__len__": lambda self: 10})()
    writer.config(cfg, model, data, resumed=False, layout={"processes": 2, "batchnorm": "per-process"})
    writer.config(cfg, model, data, resumed=True, layout={"processes": 2, "batchnorm": "per-process"})
    with pytest.raises(ValueError, match="trained with per-process BatchNorm, this process would use "
                                         "global-batch; expected the same --sync-bn choice"):
        writer.config(cfg, model, data, resumed=True, layout={"processes": 2, "batchnorm": "global-batch"})


def test_nproc_launches_torchrun_without_itself():
    from adadf_core.cli import _without_nproc
    assert _without_nproc(["--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["--epochs", "1"]
    cmd = distributed.torchrun_command(2, ["--epochs", "1"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       "-m", "adadf_core", "train", "--epochs", "1"]


# ----------------------------------------------------------------------- 2 gloo processes (spawn)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    d = distributed.init("cpu")
    try:
        fn(d, *args)
    finally:
        distributed.shutdown(d)


def spawn(fn, *args, world=2):
    torch.multiprocessing.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)


def _miner_worker(d, out: Path, probs, labels):
    half = len(labels) // 2
    mine = slice(d.rank * half, (d.rank + 1) * half)
    miner = A.ClassDistributionMiner(C)
    miner.update(probs[mine], labels[mine])
    miner.reduce(d.all_reduce_sum)
    torch.save(miner.compute(0.3), out / f"D{d.rank}.pt")


def test_miner_all_reduces_to_the_single_process_D(tmp_path):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(40, C, generator=g) * 2, 1)
    labels = torch.arange(40) % C
    spawn(_miner_worker, tmp_path, probs, labels)
    D0, D1 = torch.load(tmp_path / "D0.pt"), torch.load(tmp_path / "D1.pt")
    one = A.ClassDistributionMiner(C)
    one.update(probs, labels)
    assert torch.equal(D0, D1)                                   # identical on every process
    assert torch.allclose(D0, one.compute(0.3), atol=1e-6)       # = one process on the same data


class Heads(nn.Module):
    """A stand-in for AdaDFNet's output: linear maps of the input to o_1, o_2 and (a_1, a_2)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.aux, self.target, self.att = nn.Linear(6, C), nn.Linear(6, C), nn.Linear(6, 2)

    def forward(self, x):
        return dict(aux_logits=self.aux(x), logits=self.target(x), attention=torch.sigmoid(self.att(x)))


def loss_of(model, x, y, D, gather=None, group=None, divisor=None):
    return A.adadf_loss(model(x), y, D, 2, rr_margin=0.5, group_size=group, kl_divisor=divisor,
                        rr_low_group="lowest", gather=gather)["loss"]


def _global_batch_worker(d, out: Path, x, y, D, crops):
    model = Heads()
    b = len(y) // d.world
    mine = slice(d.rank * b, (d.rank + 1) * b)
    group = (len(y) // crops, len(y) // crops // d.world) if crops else (None, None)
    loss_of(model, x[mine], y[mine], D, d.gather_batch, group[0], group[1]).backward()
    grads = [d.all_reduce_sum(p.grad.clone()) / d.world for p in model.parameters()]   # what DDP does
    torch.save(grads, out / f"g{d.rank}.pt")


@pytest.mark.parametrize("crops", [None, 4])
def test_global_batch_rank_regularisation_and_normalisation_match_one_process(tmp_path, crops):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.arange(16) % C
    D = torch.softmax(torch.randn(C, C, generator=g), 1)
    spawn(_global_batch_worker, tmp_path, x, y, D, crops)
    model = Heads()
    group = 16 // crops if crops else None           # 4 images x 4 crops under crop_batch_quirk
    loss_of(model, x, y, D, None, group, group).backward()
    for rank in (0, 1):
        for got, want in zip(torch.load(tmp_path / f"g{rank}.pt"), (p.grad for p in model.parameters())):
            assert torch.allclose(got, want, atol=1e-6), (rank, (got - want).abs().max())


def _state_worker(d, out: Path, probs, att, idx, labels):
    from adadf_core.config import make_config, resolve_config
    from adadf_core.methods import RunContext
    from adadf_core.methods.scn import SCNMethod
    from adadf_core.methods.slm_aea import SLMAEAMethod
    from tests.test_methods import FakeSet
    b = len(idx) // d.world
    mine = slice(d.rank * b, (d.rank + 1) * b)
    ds = FakeSet(n=28)
    scn_cfg = resolve_config(make_config("synthfer", scn_relabel_margin=0.0, scn_relabel_epoch=1))
    scn = SCNMethod(scn_cfg, C, ds, RunContext(dist=d))
    scn._pending = dict(probs=probs[mine], attention=att[mine], indices=idx[mine], n_crops=None)
    scn.after_optimizer_step(None)
    slm = SLMAEAMethod(resolve_config(make_config("synthfer", method="slm_aea")), C, ds, RunContext(dist=d))
    slm._pending = dict(probs=probs[mine], indices=idx[mine], labels=labels[mine], n_crops=None, eps=1.5)
    slm.after_optimizer_step(None)
    torch.save({"y": scn.y_cur, "relabeled": int(scn._relabels), "Z": slm.Z}, out / f"s{d.rank}.pt")


def test_scn_relabels_and_slm_table_stay_the_same_on_every_process(tmp_path):
    from adadf_core.config import make_config, resolve_config
    from adadf_core.methods.scn import SCNMethod
    from adadf_core.methods.slm_aea import SLMAEAMethod
    from tests.test_methods import FakeSet
    g = torch.Generator().manual_seed(2)
    idx = torch.randperm(28, generator=g)[:8]
    ds = FakeSet(n=28)
    probs, att = torch.softmax(torch.randn(8, C, generator=g) * 3, 1), torch.rand(8, generator=g)
    spawn(_state_worker, tmp_path, probs, att, idx, ds.labels[idx])
    s0, s1 = torch.load(tmp_path / "s0.pt"), torch.load(tmp_path / "s1.pt")
    scn = SCNMethod(resolve_config(make_config("synthfer", scn_relabel_margin=0.0, scn_relabel_epoch=1)), C, ds)
    scn._pending = dict(probs=probs, attention=att, indices=idx, n_crops=None)
    scn.after_optimizer_step(None)
    slm = SLMAEAMethod(resolve_config(make_config("synthfer", method="slm_aea")), C, ds)
    slm._pending = dict(probs=probs, indices=idx, labels=ds.labels[idx], n_crops=None, eps=1.5)
    slm.after_optimizer_step(None)
    assert torch.equal(s0["y"], s1["y"]) and torch.equal(s0["y"], scn.y_cur)
    assert s0["relabeled"] == s1["relabeled"] == int(scn._relabels) > 0
    assert torch.equal(s0["Z"], s1["Z"]) and torch.allclose(s0["Z"], slm.Z)


def _eval_worker(d, out: Path, images, labels):
    from adadf_core.engine.evaluate import evaluate
    model = Heads_as_net()
    ds = torch.utils.data.TensorDataset(images, labels, torch.arange(len(labels)))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=shard_batches(len(ds), 3, d))
    torch.save(evaluate(model, loader, num_classes=C, dist=d), out / f"e{d.rank}.pt")


class Heads_as_net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, C)

    def forward(self, x):
        return dict(logits=self.fc(x), features=x)


def test_evaluation_counts_every_test_sample_once(tmp_path):
    from adadf_core.engine.evaluate import evaluate
    g = torch.Generator().manual_seed(3)
    images, labels = torch.randn(11, 6, generator=g), torch.arange(11) % C
    spawn(_eval_worker, tmp_path, images, labels)
    ds = torch.utils.data.TensorDataset(images, labels, torch.arange(11))
    one = evaluate(Heads_as_net(), torch.utils.data.DataLoader(ds, batch_size=3), num_classes=C)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"e{rank}.pt", weights_only=False)
        assert (got["labels"] == one["labels"]).all() and (got["preds"] == one["preds"]).all()
        assert np.allclose(got["features"], one["features"]) and got["confusion"].sum() == 11
        assert got["acc"] == one["acc"]


# ------------------------------------------------------------------- whole runs: train.fit on 2 processes
class TinyDual(nn.Module):
    """AdaDFNet's interface without BatchNorm (torch's SyncBatchNorm has no CPU kernel): a frozen conv
    trunk, two conv branches with an fc and an attention head each."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Conv2d(3, 4, 3, stride=2)
        self.trunk.requires_grad_(False)
        self.b1, self.b2 = nn.Conv2d(4, 8, 3, stride=2), nn.Conv2d(4, 8, 3, stride=2)
        self.fc1, self.fc2 = nn.Linear(8, C), nn.Linear(8, C)
        self.h1, self.h2 = nn.Linear(8, 1), nn.Linear(8, 1)

    def _branch(self, s, conv, fc, head):
        h = F.relu(conv(s)).mean((2, 3))
        a = torch.sigmoid(head(h))
        return a * fc(h), a[:, 0], h

    def forward(self, x):
        s = F.relu(self.trunk(x))
        o1, a1, _ = self._branch(s, self.b1, self.fc1, self.h1)
        o2, a2, h2 = self._branch(s, self.b2, self.fc2, self.h2)
        return dict(logits=o2, aux_logits=o1, attention=torch.stack((a1, a2), 1), features=h2)

    def forward_aux(self, x):
        o1, a1, _ = self._branch(F.relu(self.trunk(x)), self.b1, self.fc1, self.h1)
        return dict(aux_logits=o1, attention=a1)

    def forward_target(self, x):
        o2, a2, h2 = self._branch(F.relu(self.trunk(x)), self.b2, self.fc2, self.h2)
        return dict(logits=o2, features=h2, attention=a2)


class TinyTrunk(nn.Module):
    """An AEA trunk without BatchNorm: images -> pooled features [B, 8]."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 8, 3, stride=2)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3))


def register_tiny() -> None:
    from adadf_core.methods import METHODS, register_method
    from adadf_core.methods.adadf import AdaDFMethod
    from adadf_core.methods.slm_aea import SLMAEAMethod
    from adadf_core.models.aea import AEANet
    if "tiny_adadf" not in METHODS:
        class TinyAdaDF(AdaDFMethod):
            @classmethod
            def build_model(cls, cfg, num_classes, pretrained=None):
                return TinyDual()
        register_method("tiny_adadf")(TinyAdaDF)
    if "tiny_slm" not in METHODS:
        class TinySLM(SLMAEAMethod):
            @classmethod
            def build_model(cls, cfg, num_classes, pretrained=None):
                return AEANet(TinyTrunk(), 8, num_classes, eval_mean=cfg.slm_eval_mean)
        register_method("tiny_slm")(TinySLM)


@pytest.fixture(autouse=True)
def _registry_left_as_found():
    """``tiny_adadf`` and ``tiny_slm`` exist only while a test of this file needs them (other tests read
    the registry)."""
    yield
    from adadf_core.methods import METHODS
    METHODS.pop("tiny_adadf", None)
    METHODS.pop("tiny_slm", None)


def tiny_cfg(root, run_dir, **kw):
    from adadf_core.config import make_config, resolve_config
    register_tiny()
    base = dict(method="tiny_adadf", data_root=str(root), image_size=16, batch_size=8, epochs=2, recipe="none",
                track_samples=4, progress=False, num_threads=1, run_dir=str(run_dir), rr_margin=0.5)
    base.update(kw)
    return resolve_config(make_config("synthfer", **base))


def _fit_worker(d, root, run_dir, log: Path, kw, stop):
    from adadf_core.engine import train
    writes = []

    class Logged(train.RunWriter):              # records every write a process makes
        def begin_epoch(self):
            writes.append("begin_epoch")
            return super().begin_epoch()

        def json(self, *a, **k):
            writes.append("json")
            return super().json(*a, **k)

        def start_fresh(self):
            writes.append("start_fresh")
            return super().start_fresh()

    train.RunWriter = Logged
    train.fit(tiny_cfg(root, run_dir, **kw), stop_after_epoch=stop)
    (log / f"writes{d.rank}.txt").write_text("\n".join(writes))


def metrics_rows(run_dir):
    import csv
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_two_processes_with_half_batches_match_one_process(tiny_synthfer, tmp_path):
    from adadf_core.runs.reader import Run
    from adadf_core.engine.train import fit
    one = Run(fit(tiny_cfg(tiny_synthfer, tmp_path / "one")).path)
    spawn(_fit_worker, tiny_synthfer, tmp_path / "two", tmp_path, {}, None)
    two = Run(tmp_path / "two")
    assert (tmp_path / "writes1.txt").read_text() == ""          # only rank 0 writes the folder
    assert "begin_epoch" in (tmp_path / "writes0.txt").read_text()
    m1, m2 = one.metrics, two.metrics
    assert len(m1) == len(m2) == 2
    for col in ("loss", "loss_ce", "loss_kl", "loss_rr", "train_acc", "test_acc", "js_gt_fused"):
        assert np.allclose(m1[col], m2[col], rtol=1e-4, atol=1e-6), (col, m1[col].tolist(), m2[col].tolist())
    assert m1["loss_rr"].max() > 0                                 # the global-batch RR was active
    assert np.allclose(one.class_distributions, two.class_distributions, atol=1e-5)
    w1, w2 = one.load_model(), two.load_model()
    for (name, a), b in zip(w1.state_dict().items(), w2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


@pytest.mark.slow
def test_two_processes_anchor_slm_aea_on_the_global_batch(tiny_synthfer, tmp_path):
    """SLM-AEA's anchor g = f + w·mean(f) over the global batch: 2 processes with B/2 images each end where one
    process with B does; anchoring on each process's own half (``ddp_attention_batch="rank"``) does not."""
    from adadf_core.runs.reader import Run
    from adadf_core.engine.train import fit
    kw = dict(method="tiny_slm", slm_beta=1.0, slm_nominal_batch=8)
    one = Run(fit(tiny_cfg(tiny_synthfer, tmp_path / "one", **kw)).path)
    spawn(_fit_worker, tiny_synthfer, tmp_path / "two", tmp_path, kw, None)
    spawn(_fit_worker, tiny_synthfer, tmp_path / "halves", tmp_path, dict(kw, ddp_attention_batch="rank"), None)
    two, halves = Run(tmp_path / "two"), Run(tmp_path / "halves")
    for col in ("loss", "train_acc", "test_acc", "soft_max_mean", "soft_disagree"):
        assert np.allclose(one.metrics[col], two.metrics[col], rtol=1e-4, atol=1e-6), col
    w1, w2, w3 = (r.load_model().state_dict() for r in (one, two, halves))
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    assert not all(torch.allclose(w1[k], w3[k], atol=1e-5) for k in w1)


def _adadfnet_grad_worker(d, out: Path, x, y, D, sync_bn):
    from adadf_core.models.networks import build_model
    torch.manual_seed(0)
    model = build_model("adadf", C).train()
    if sync_bn:
        model = distributed.convert_to_global_batchnorm(model)
    b = len(y) // d.world
    mine = slice(d.rank * b, (d.rank + 1) * b)
    loss_of(model, x[mine], y[mine], D, d.gather_batch).backward()
    grads = [d.all_reduce_sum(p.grad.clone()) / d.world for p in model.parameters() if p.grad is not None]
    torch.save(grads, out / f"adadfnet{d.rank}_{sync_bn}.pt")     # what DDP averages


def test_real_adadfnet_step_on_two_processes_has_the_one_process_gradient(tmp_path):
    """AdaDFNet (ResNet-18, BatchNorm in trunk and branches), 2 gloo processes with B/2 each: with global-batch
    BatchNorm the averaged gradient of one step is one process's gradient on B; with per-process BatchNorm
    (``sync_bn=False``) it is not."""
    from adadf_core.models.networks import build_model
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % C
    D = torch.softmax(torch.randn(C, C, generator=g), 1)
    torch.manual_seed(0)
    model = build_model("adadf", C).train()
    loss_of(model, x, y, D).backward()
    want = [p.grad for p in model.parameters() if p.grad is not None]

    def relative_error(sync_bn):
        spawn(_adadfnet_grad_worker, tmp_path, x, y, D, sync_bn)
        got = [torch.load(tmp_path / f"adadfnet{r}_{sync_bn}.pt") for r in (0, 1)]
        assert all(torch.equal(a, b) for a, b in zip(*got))          # every process steps with the same gradient
        diff = sum(((a - b) ** 2).sum() for a, b in zip(got[0], want)) ** 0.5
        return float(diff / sum((b ** 2).sum() for b in want) ** 0.5)

    assert relative_error(True) < 1e-4          # measured 3.8e-6
    assert relative_error(False) > 0.1          # measured 1.5


@pytest.mark.slow
def test_two_processes_of_the_real_adadfnet_stay_with_one_process(tiny_synthfer, tmp_path):
    """A whole epoch of AdaDFNet on 2 processes: with global-batch BatchNorm (the default) it stays close to one
    process with batch B, far closer than with per-process BatchNorm. Not to float tolerance: Adam's first steps
    turn rounding-sized gradient differences of near-zero gradients into steps of the full learning rate."""
    from adadf_core.runs.reader import Run
    from adadf_core.engine.train import fit
    kw = dict(method="adadf", image_size=32, epochs=1)
    one = Run(fit(tiny_cfg(tiny_synthfer, tmp_path / "one", **kw)).path)
    spawn(_fit_worker, tiny_synthfer, tmp_path / "two", tmp_path, kw, None)
    spawn(_fit_worker, tiny_synthfer, tmp_path / "local", tmp_path, dict(kw, sync_bn=False), None)
    two, local = Run(tmp_path / "two"), Run(tmp_path / "local")
    assert two.config.sync_bn is None                       # the default: global-batch BatchNorm
    assert [(r.environment["processes"], r.environment["batchnorm"]) for r in (one, two, local)] == [
        (1, "one-process"), (2, "global-batch"), (2, "per-process")]
    for col in ("loss", "loss_ce", "loss_kl", "loss_rr"):
        near, far = (abs(float(r.metrics[col].iloc[-1]) - float(one.metrics[col].iloc[-1])) for r in (two, local))
        assert near < 0.25 * far, (col, near, far)
    w1, w2, w3 = (r.load_model().state_dict() for r in (one, two, local))
    params = [k for k in w1 if "running" not in k and "num_batches" not in k]
    near, far = (sum(float((w1[k] - w[k]).norm() ** 2) for k in params) ** 0.5 for w in (w2, w3))
    assert near < 0.25 * far, (near, far)


@pytest.mark.slow
def test_two_process_run_resumes_to_the_same_numbers(tiny_synthfer, tmp_path):
    spawn(_fit_worker, tiny_synthfer, tmp_path / "whole", tmp_path, {"recipe": "light"}, None)
    spawn(_fit_worker, tiny_synthfer, tmp_path / "cut", tmp_path, {"recipe": "light"}, 1)
    assert len(metrics_rows(tmp_path / "cut")) == 1
    spawn(_fit_worker, tiny_synthfer, tmp_path / "cut", tmp_path, {"recipe": "light", "resume": True}, None)
    assert metrics_rows(tmp_path / "cut") == metrics_rows(tmp_path / "whole")


# ---------------------------------------------------------------- CUDA: NCCL and SyncBatchNorm (2 GPUs)
@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_with_sync_bn_match_one_gpu(tiny_synthfer, tmp_path):
    """The real AdaDFNet (BatchNorm in the branches): with SyncBatchNorm and the global-batch attention
    terms, 2 GPUs with B/2 each end where 1 GPU with B does, up to TF32/fp32 rounding."""
    from adadf_core.runs.reader import Run
    from adadf_core.engine.train import fit
    kw = dict(method="adadf", device="cuda", num_workers=0, amp="off", channels_last=False)
    one = Run(fit(tiny_cfg(tiny_synthfer, tmp_path / "one", **kw)).path)
    torch.multiprocessing.spawn(_entry_cuda, args=(2, free_port(), tiny_synthfer, tmp_path / "two", kw),
                                nprocs=2, join=True)
    two = Run(tmp_path / "two")
    assert two.config.sync_bn is None                       # the default: SyncBatchNorm on with CUDA
    for col in ("loss", "loss_rr", "train_acc", "test_acc"):
        assert np.allclose(one.metrics[col], two.metrics[col], rtol=2e-3, atol=1e-4), col
    assert np.allclose(one.class_distributions, two.class_distributions, atol=1e-3)


def _entry_cuda(rank, world, port, root, run_dir, kw):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    from adadf_core.engine import train
    try:
        train.fit(tiny_cfg(root, run_dir, **kw))
    finally:
        distributed.shutdown()


@pytest.mark.slow
def test_adadf_train_nproc_launches_torchrun(tiny_synthfer, tmp_path):
    """`adadf train --nproc 2` end to end: torchrun starts two gloo processes, rank 0 alone prints and writes."""
    import subprocess
    import sys
    run_dir = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "adadf_core.cli", "train", "--nproc", "2", "--dataset", "synthfer",
                           "--data-root", str(tiny_synthfer), "--epochs", "1", "--image-size", "16", "--batch-size",
                           "8", "--recipe", "none", "--track-samples", "0", "--num-threads", "1", "--set",
                           "progress=false", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(f"run: {run_dir}") == 1          # one summary: rank 0's
    assert len(metrics_rows(run_dir)) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_gpu_run_in_fp32_with_device_augmentation(tiny_synthfer, tmp_path):
    from adadf_core.runs.reader import Run
    from adadf_core.engine.train import fit
    cfg = tiny_cfg(tiny_synthfer, tmp_path / "gpu", method="adadf", device="cuda", recipe="official",
                   augment_device="cuda", image_size=32, epochs=1)
    run = Run(fit(cfg).path)
    assert run.config.amp == "auto" and run.environment["tf32"]["matmul"] in (True, False)
    assert np.isfinite(run.metrics["loss"]).all()


def _affectnet_loader_worker(d, out: Path, labels):
    from adadf_core.config import make_config, resolve_config
    from adadf_core.engine.loaders import make_train_loader
    from tests.test_fidelity import Labelled
    cfg = resolve_config(make_config("affectnet7", "official", batch_size=4, seed=5))
    loader, sampler, _ = make_train_loader(cfg, Labelled(labels), "cpu", d)
    sampler.set_epoch(3)
    passes = [torch.cat([idx for _, _, idx in loader]).tolist() for _ in range(2)]   # training, mining
    torch.save(passes, out / f"p{d.rank}.pt")


def test_affectnet_passes_are_drawn_once_then_split_between_processes(tmp_path):
    from adadf_core.config import make_config, resolve_config
    from adadf_core.engine.loaders import make_train_loader
    from tests.test_fidelity import Labelled
    labels = np.array([0] * 6 + [1] * 5 + [2] * 9 + [3] * 4)     # 4 per class: 16 samples, 4 global batches
    spawn(_affectnet_loader_worker, tmp_path, labels)
    p0, p1 = torch.load(tmp_path / "p0.pt"), torch.load(tmp_path / "p1.pt")
    cfg = resolve_config(make_config("affectnet7", "official", batch_size=4, seed=5))
    loader, sampler, _ = make_train_loader(cfg, Labelled(labels), "cpu")
    sampler.set_epoch(3)
    one = [torch.cat([idx for _, _, idx in loader]).tolist() for _ in range(2)]
    for k in (0, 1):                                   # the training pass, then the (redrawn) mining pass
        assert not set(p0[k]) & set(p1[k])             # no sample on both processes
        assert sorted(p0[k] + p1[k]) == sorted(one[k])  # together: the single process's subset
    assert sorted(one[0]) != sorted(one[1])


def test_config_args_rebuild_a_notebooks_config(tmp_path):
    """What a notebook hands to torchrun rebuilds its config exactly (adadf train's own parsing)."""
    import dataclasses as dc

    from adadf_core import cli
    from adadf_core.config import make_config, resolve_config

    cfg = resolve_config(make_config("synthfer", lambda_min=0.1, pretrained=str(tmp_path / "w.pth"), seed=2,
                                     max_train_samples=None, crop_batch_quirk=False))
    args = cli.build_train_parser().parse_args(cli.config_args(cfg) + ["--run-dir", str(tmp_path / "r")])
    assert dc.asdict(cli.config_from_args(args)) == dc.asdict(dc.replace(cfg, run_dir=str(tmp_path / "r")))
