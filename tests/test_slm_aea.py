"""SLM-AEA: ramps, soft-label init and update (docs/METHOD.md §11.9 trajectories), AEA head, method."""
import math
import types

import pytest
import torch
from torch import nn

from adadf_core.config import make_config, resolve_config
from adadf_core.methods.slm_aea import SLMAEAMethod
from adadf_core.models.aea import AEAHead, AEANet
from adadf_core.ops.slm_aea_ops import init_soft_logits, slm_label_update, slm_ramps, soft_cross_entropy

C = 7


# ----------------------------------------------------------------------------- ramps and init

@pytest.mark.parametrize("eps,u,d", [(0.0, 0.077, 1.0), (7.0, 0.698, 1.0), (10.0, 1.0, 0.445),
                                     (20.0, 1.0, 0.210), (40.0, 1.0, 0.131)])
def test_ramp_values(eps, u, d):
    got_u, got_d = slm_ramps(eps)
    assert got_u == pytest.approx(u, abs=5e-4)
    assert got_d == pytest.approx(d, abs=5e-4)


def test_ramp_jump_at_beta_is_kept():
    u_before, d_before = slm_ramps(7.0)
    u_after, d_after = slm_ramps(7.0 + 1e-9)
    assert (u_before, d_before) == (pytest.approx(0.698, abs=5e-4), 1.0)
    assert (u_after, d_after) == (1.0, pytest.approx(0.698, abs=5e-4))
    with pytest.raises(ValueError):
        slm_ramps(-0.1)


def test_init_soft_logits():
    labels = torch.tensor([0, 3, 6])
    z = init_soft_logits(labels, C, k=5, p=0.97)
    assert z.shape == (3, C) and z.dtype == torch.float32
    assert torch.all(z[torch.arange(3), labels] == 5.0)
    assert z[0, 1].item() == pytest.approx(5 + math.log(0.03 / (0.97 * 6)), abs=1e-6)  # about -0.268
    q = z.softmax(1)
    assert torch.allclose(q[torch.arange(3), labels], torch.full((3,), 0.97), atol=1e-6)
    off = q.masked_fill(torch.nn.functional.one_hot(labels, C).bool(), 0)
    assert torch.allclose(off.sum(1), torch.full((3,), 0.03), atol=1e-6)
    assert torch.allclose(off[0, 1:], torch.full((6,), 0.005), atol=1e-6)
    with pytest.raises(ValueError):
        init_soft_logits(torch.tensor([7]), C)
    with pytest.raises(ValueError):
        init_soft_logits(labels, C, p=1.0)


def test_update_closed_form_and_sum_preserved():
    torch.manual_seed(0)
    z = torch.randn(5, C) * 3
    pi = torch.randn(5, C).softmax(1)
    y = torch.tensor([0, 1, 2, 3, 6])
    u, d = 0.3, 0.8
    new = slm_label_update(z, pi, y, u, d, step=200, nominal_batch=72)
    # the closed form equals lambda/B times the autograd gradient of the label loss (mean over 72)
    zz = z.clone().requires_grad_(True)
    logq = zz.log_softmax(1)
    loss = (u * -(pi * logq).sum(1) + d * -logq[torch.arange(5), y]).sum() / 72
    loss.backward()
    assert torch.allclose(new, z - 200 * zz.grad, atol=1e-4)
    assert torch.allclose(new.sum(1), z.sum(1), atol=1e-4)
    with pytest.raises(ValueError):
        slm_label_update(z, pi[:4], y, u, d)


def test_soft_cross_entropy_matches_ce_for_onehot():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    expected = (-torch.log_softmax(logits, 1)[0, 0] - 0.5 * (torch.log_softmax(logits, 1)[1, 1:]).sum()) / 2
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)
    hard = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert soft_cross_entropy(logits, hard).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item(), abs=1e-6)


# ----------------------------------------------------------------------------- §11.9 trajectories

def _trajectory(pi, y):
    """Soft label after each epoch e = 1..40, network output frozen at ``pi``.

    Convention that reproduces docs/METHOD.md §11.9: one update per epoch at mid-epoch
    (eps = e - 0.5), lambda = 200, nominal batch 72; the value "at epoch e" is the soft label after
    epoch e's update.
    """
    z = init_soft_logits(torch.tensor([y]), C)
    out = []
    for e in range(1, 41):
        u, d = slm_ramps(e - 0.5)
        z = slm_label_update(z, pi.view(1, C), torch.tensor([y]), u, d)
        out.append(z.softmax(1)[0])
    return torch.stack(out)  # [40, C]; row e-1 = after epoch e


def _pi(spec):
    """spec: {class: prob}; the remaining mass is spread evenly over the unnamed classes."""
    rest = [c for c in range(C) if c not in spec]
    left = (1.0 - sum(spec.values())) / len(rest)
    return torch.tensor([spec.get(c, left) for c in range(C)])


def test_trajectory_confident_correct():
    # pi = 0.9 on y, the remaining 0.1 spread evenly over the other six classes
    q = _trajectory(_pi({0: 0.9}), 0)
    assert torch.all((q[:7, 0] - 0.97).abs() <= 0.02)    # stays ~0.97 until epoch 7
    assert q[39, 0].item() == pytest.approx(0.91, abs=0.02)
    assert q[39, 0] < q[6, 0] - 0.04                       # then relaxes


def test_trajectory_ambiguous():
    # pi = 0.5 on y, 0.3 on a neighbour, the remaining 0.2 spread evenly over the other five classes
    q = _trajectory(_pi({0: 0.5, 1: 0.3}), 0)
    assert q[7, 0].item() == pytest.approx(0.67, abs=0.02)   # epoch 8
    assert q[39, 0].item() == pytest.approx(0.56, abs=0.02)  # epoch 40
    assert q[39, 1].item() == pytest.approx(0.27, abs=0.02)


def test_trajectory_mislabelled():
    # pi = 0.8 on the true class (1), 0.1 on the given label y = 0, 0.02 on each of the other five.
    # (Spreading the 0.2 over all six other classes instead gives 0.15 on y at epoch 40, not the doc's 0.21.)
    q = _trajectory(_pi({1: 0.8, 0: 0.1}), 0)
    assert q[39, 0].item() == pytest.approx(0.21, abs=0.02)
    assert q[39, 1].item() == pytest.approx(0.71, abs=0.02)
    # one-epoch overshoot around epochs 8-9: 0.27 -> 0.54 on y, then back down
    assert q[7, 0].item() == pytest.approx(0.27, abs=0.02)
    assert q[8, 0].item() == pytest.approx(0.54, abs=0.02)
    assert q[9, 0] < q[8, 0] - 0.2


# ----------------------------------------------------------------------------- AEA head

def test_aea_head_batch_mean_and_running_mean():
    torch.manual_seed(0)
    head = AEAHead(4, 3)
    assert torch.all(head.w == 1)
    f = torch.randn(6, 4)
    head.train()
    out = head(f)
    expected = head.fc(f + f.mean(0))          # w = 1
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(head.running_mean, f.mean(0))  # first batch initialises the running mean
    f2 = torch.randn(6, 4)
    head(f2)
    assert torch.allclose(head.running_mean, 0.9 * f.mean(0) + 0.1 * f2.mean(0), atol=1e-6)
    # eval, faithful mode: the evaluation batch's own mean -> predictions depend on the batch
    head.eval()
    single = head(f[:1])
    assert torch.allclose(single, head.fc(2 * f[:1]), atol=1e-6)   # g = f (1 + w)
    assert not torch.allclose(head(f)[:1], single)
    # non-transductive mode: independent of the batch composition
    head.eval_mean = "running"
    assert torch.allclose(head(f)[:1], head(f[:1]), atol=1e-6)
    assert torch.allclose(head(f[:1]), head.fc(f[:1] + head.running_mean), atol=1e-6)


def test_aea_gradient_flows_through_batch_mean():
    head = AEAHead(3, 2)
    f = torch.randn(4, 3, requires_grad=True)
    head(f)[0].sum().backward()      # the loss of sample 0 only
    assert f.grad[1:].abs().sum() > 0  # reaches the other samples through m_B
    assert head.w.grad is not None and head.w.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- SLMAEAMethod with fixed outputs


class FrozenNet(nn.Module):
    """Fake model: sample i (the "image" [i]) always predicts log(pi_i)."""

    def __init__(self, pi):
        super().__init__()
        self.logp = pi.log()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return {"logits": self.logp[x[:, 0].long()] + self.bias, "features": x}


def test_slm_method_reproduces_frozen_trajectory():
    """Through the Method: 2 steps per epoch, the tracked samples drawn at step 1, so eps = e - 0.5."""
    cfg = resolve_config(make_config("synthfer", method="slm_aea", device="cpu", epochs=40, slm_beta=7.0))
    pis = torch.stack([_pi({0: 0.9}), _pi({0: 0.5, 1: 0.3}), _pi({1: 0.8, 0: 0.1})])
    labels = torch.zeros(3, dtype=torch.long)
    clean = torch.tensor([0, 0, 1])
    train = types.SimpleNamespace(labels=labels, clean_labels=clean, flipped=labels != clean)
    method = SLMAEAMethod(cfg, C, train)
    model = FrozenNet(pis)
    idx = torch.arange(3)
    for e in range(1, 41):
        loss, _ = method.training_step(model, idx[:, None].float(), labels, idx, e, 1, 2)
        if e == 1:   # soft CE against the initial soft labels
            q0 = init_soft_logits(labels, C).softmax(1)
            assert loss.item() == pytest.approx(soft_cross_entropy(pis.log(), q0).item(), abs=1e-5)
        loss.backward()
        method.after_optimizer_step(model)
        m = method.end_epoch(model, e, None).metrics
        if e == 8:
            assert method.soft_labels()[1, 0].item() == pytest.approx(0.67, abs=0.02)
            assert method.soft_labels()[2, 0].item() == pytest.approx(0.27, abs=0.02)
    q = method.soft_labels()
    assert q[0, 0].item() == pytest.approx(0.91, abs=0.02)
    assert q[1, 0].item() == pytest.approx(0.56, abs=0.02) and q[1, 1].item() == pytest.approx(0.27, abs=0.02)
    assert q[2, 0].item() == pytest.approx(0.21, abs=0.02) and q[2, 1].item() == pytest.approx(0.71, abs=0.02)
    assert m["recovered_flipped"] == 1.0 and m["soft_disagree"] == pytest.approx(1 / 3)
    assert m["slm_u"] == 1.0 and m["slm_d"] == pytest.approx(slm_ramps(39.5)[1])
    # state round trip
    fresh = SLMAEAMethod(cfg, C, train)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.Z, method.Z)


def test_slm_method_model_and_cosine_schedule():
    cfg = resolve_config(make_config("synthfer", method="slm_aea", device="cpu", epochs=2,
                                     slm_eval_mean="running"))
    cfg.slm_schedule = "cosine"   # SLM-AEA's native per-iteration schedule
    train = types.SimpleNamespace(labels=torch.tensor([0, 1]), clean_labels=torch.tensor([0, 1]),
                                  flipped=torch.tensor([False, False]))
    method = SLMAEAMethod(cfg, C, train)
    model = SLMAEAMethod.build_model(cfg, C)
    assert isinstance(model, AEANet) and model.head.eval_mean == "running"
    out = model(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, C) and out["features"].shape == (2, 512)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched, interval = method.make_scheduler(opt, steps_per_epoch=5)
    assert interval == "step"
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    t = torch.arange(10.0)
    expected = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + torch.cos(math.pi * t / 10))
    assert torch.allclose(torch.tensor(lrs), expected, rtol=1e-4)


# ----------------------------------------------------------------------------- tiny fit

@pytest.mark.slow
def test_slm_tiny_fit_state_and_resume(tiny_synthfer, tmp_path, monkeypatch):
    """Epoch 1, stop, resume for epoch 2 (2 steps of 16 per epoch): metrics, Z in the checkpoint, resume."""
    import numpy as np

    from adadf_core.engine.loaders import load_splits
    from adadf_core.engine.train import fit

    def cfg_for(**kw):
        return make_config("synthfer", "official", method="slm_aea", data_root=str(tiny_synthfer),
                           run_dir=str(tmp_path / "run"), image_size=32, recipe="light", batch_size=16, epochs=2,
                           max_train_samples=32, max_test_samples=16, progress=False, num_workers=0,
                           track_samples=0, noise_rate=0.25, noise_seed=1, seed=3, device="cpu", **kw)

    part = fit(cfg_for(), stop_after_epoch=1)
    Z1 = torch.load(part.path / "checkpoint.pt", weights_only=False)["method"]["Z"]
    train = load_splits(resolve_config(cfg_for()), with_train=True, with_train_eval=False)["train"]
    assert Z1.shape == (32, C)
    init = init_soft_logits(train.labels, C)
    assert torch.allclose(Z1.sum(1), init.sum(1), atol=1e-4)        # the update preserves sum_c z
    assert not torch.allclose(Z1, init)                             # every sample was updated once

    loaded = []
    original = SLMAEAMethod.load_state_dict

    def spy(self, state):
        original(self, state)
        loaded.append(self.Z.cpu().clone())

    monkeypatch.setattr(SLMAEAMethod, "load_state_dict", spy)
    run = fit(cfg_for(resume=True))
    assert len(loaded) == 1 and torch.equal(loaded[0], Z1)
    m = run.metrics
    assert run.finished and m["epoch"].tolist() == [1, 2]
    for col in ("loss", "test_acc", "soft_max_mean", "soft_disagree", "recovered_flipped", "slm_u", "slm_d"):
        assert np.isfinite(m[col].to_numpy(dtype=float)).all(), col
    # ramps at the last update of each epoch: t = 1 -> eps = 0.5, t = 3 -> eps = 1.5 (S = 2)
    a, b = run.config.slm_alpha, run.config.slm_beta   # the SynthFER preset scales beta to its budget
    assert m["slm_u"].tolist() == pytest.approx([slm_ramps(0.5, a, b)[0], slm_ramps(1.5, a, b)[0]])
    Z2 = torch.load(run.path / "checkpoint.pt", weights_only=False)["method"]["Z"]
    q = Z2.softmax(1)
    assert float(q.max(1).values.mean()) == pytest.approx(m["soft_max_mean"].iloc[1], abs=1e-6)
    assert float((q.argmax(1) != train.labels).float().mean()) == pytest.approx(m["soft_disagree"].iloc[1])
    fl = train.flipped
    assert float((q.argmax(1)[fl] == train.clean_labels[fl]).float().mean()) == pytest.approx(
        m["recovered_flipped"].iloc[1])
