"""SCN: relabel rule, relabel scope, the SCN method's relabel schedule, a tiny fit with resume."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adadf_core.config import make_config, resolve_config
from adadf_core.methods.scn import SCNMethod
from adadf_core.ops.scn_ops import low_importance_mask, scn_relabel


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_relabel_exact_samples_above_margin():
    # margin 0.25 with dyadic probabilities so that "exactly at the margin" is exact in float32
    probs = _probs([
        [0.75, 0.25, 0.0],    # y=1: 0.75 - 0.25 = 0.5 > 0.25          -> relabel to 0
        [0.625, 0.375, 0.0],  # y=1: 0.625 - 0.375 = 0.25, at margin   -> kept
        [0.5, 0.125, 0.375],  # y=1: 0.5 - 0.125 = 0.375 > 0.25        -> relabel to 0
        [0.5, 0.125, 0.375],  # y=2: 0.5 - 0.375 = 0.125               -> kept
        [0.5, 0.25, 0.25],    # y=0: already the argmax (margin 0)     -> kept
    ])
    labels = torch.tensor([1, 1, 1, 2, 0])
    new, changed = scn_relabel(probs, labels, margin=0.25)
    assert changed.tolist() == [True, False, True, False, False]
    assert new.tolist() == [0, 1, 0, 2, 0]
    assert labels.tolist() == [1, 1, 1, 2, 0]  # input untouched


def test_relabel_default_margin():
    probs = _probs([[0.6, 0.35, 0.05], [0.55, 0.36, 0.09], [0.1, 0.2, 0.7]])
    new, changed = scn_relabel(probs, torch.tensor([1, 1, 0]))  # margins 0.25, 0.19, 0.6
    assert changed.tolist() == [True, False, True]
    assert new.tolist() == [0, 1, 2]


def test_low_importance_mask_and_scope():
    att = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.3, 0.5, 0.4, 0.05])  # B = 10 -> top 7 high
    low = low_importance_mask(att, 0.7)
    # high = 0.9 0.8 0.7 0.6 0.5 0.4 0.3; low = 0.2 (idx 3), 0.1 (idx 1), 0.05 (idx 9)
    assert low.tolist() == [False, True, False, True, False, False, False, False, False, True]
    # every sample would be relabelled under scope "all"; "low" touches only the low group
    probs = torch.tensor([[0.9, 0.05, 0.05]]).repeat(10, 1)
    labels = torch.full((10,), 2)
    new_all, ch_all = scn_relabel(probs, labels, 0.2)
    assert ch_all.all()
    new_low, ch_low = scn_relabel(probs, labels, 0.2, candidates_mask=low)
    assert torch.equal(ch_low, low)
    assert torch.equal(new_low, torch.where(low, torch.zeros_like(labels), labels))


def test_bad_inputs():
    with pytest.raises(ValueError):
        scn_relabel(torch.rand(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        scn_relabel(torch.rand(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError):
        low_importance_mask(torch.rand(3, 1))


def test_attention_scaling_keeps_argmax():
    torch.manual_seed(0)
    z = torch.randn(50, 7) * 3
    alpha = torch.rand(50, 1) * 0.98 + 0.01
    assert torch.equal((alpha * z).argmax(1), z.argmax(1))
    # but it flattens the softmax used for relabelling
    assert torch.all((alpha * z).softmax(1).max(1).values <= z.softmax(1).max(1).values + 1e-6)


# ----------------------------------------------------------------------------- SCNMethod with fixed outputs


class FixedNet(nn.Module):
    """Fake SCN model: the "image" of sample i is [i]; outputs alpha_i * z_i from fixed tables."""

    def __init__(self, z, alpha):
        super().__init__()
        self.z, self.alpha = z, alpha
        self.bias = nn.Parameter(torch.zeros(()))   # something for backward to reach

    def forward(self, x):
        i = x[:, 0].long()
        a = self.alpha[i] + 0 * self.bias
        return {"logits": a[:, None] * self.z[i], "attention": a, "features": self.z[i]}


def _fake_set(labels, clean):
    labels, clean = torch.tensor(labels), torch.tensor(clean)
    return types.SimpleNamespace(labels=labels, clean_labels=clean, flipped=labels != clean,
                                 class_names=["a", "b", "c"], num_classes=3, __len__=lambda: len(labels))


def _scn(relabel_epoch=3, scope="all"):
    cfg = resolve_config(make_config("synthfer", method="scn", batch_size=8, scn_relabel_epoch=relabel_epoch,
                                     scn_relabel_scope=scope, device="cpu"))
    # samples 0-2: the model is sure of class 0; 0 and 1 are labelled 1 (0 flipped from 0, 1 flipped from 2)
    z = torch.tensor([[4.0, 0, 0], [4.0, 0, 0], [4.0, 0, 0], [0, 0, 4.0], [0, 3.0, 0], [0, 3.0, 0], [0, 3.0, 0],
                      [0, 3.0, 0]])
    alpha = torch.tensor([0.1, 0.9, 0.9, 0.9, 0.8, 0.7, 0.6, 0.5])
    train = _fake_set([1, 1, 0, 2, 1, 1, 1, 1], [0, 2, 0, 2, 1, 1, 1, 1])
    return SCNMethod(cfg, 3, train), FixedNet(z, alpha), z, alpha


def _epoch(method, model, epoch):
    idx = torch.arange(8)
    loss, logs = method.training_step(model, idx[:, None].float(), method.y_given[idx], idx, epoch, 0, 1)
    loss.backward()
    method.after_optimizer_step(model)
    return loss, logs, method.end_epoch(model, epoch, None).metrics


def test_scn_method_relabel_schedule_and_persistence():
    method, model, z, alpha = _scn(relabel_epoch=3)
    given = method.y_given.clone()
    # with alpha = 0.1 sample 0's softmax is flat: max - P_y = 0.33 - 0.33... below 0.2 -> not relabelled
    p0 = torch.softmax(0.1 * z[0], 0)
    assert p0[0] - p0[1] < 0.2
    p1 = torch.softmax(0.9 * z[1], 0)
    assert p1[0] - p1[1] > 0.2
    for e in (1, 2):
        loss, logs, m = _epoch(method, model, e)
        assert m["relabeled"] == 0 and torch.equal(method.y_cur, given)
    # epoch 3: the loss still uses the old labels, then sample 1 is relabelled 1 -> 0 (its clean label is 2)
    loss, logs, m = _epoch(method, model, 3)
    expected = F.cross_entropy(alpha[:, None] * z, given) + logs["loss_rr"]
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert m["relabeled"] == 1
    assert method.y_cur.tolist() == [1, 0, 0, 2, 1, 1, 1, 1]
    assert m["recovered_flipped"] == 0.0 and m["relabel_restored"] == 0.0
    assert m["relabeled_share"] == pytest.approx(1 / 8)
    # epoch 4: the new label is used in the loss and persists; nothing else changes
    loss, logs, m = _epoch(method, model, 4)
    expected = F.cross_entropy(alpha[:, None] * z, method.y_cur) + logs["loss_rr"]
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert m["relabeled"] == 0 and method.y_cur.tolist() == [1, 0, 0, 2, 1, 1, 1, 1]
    # checkpoint round trip
    fresh, *_ = _scn(relabel_epoch=3)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.y_cur, method.y_cur)


def test_scn_method_restores_clean_label_and_scope_low():
    method, model, z, alpha = _scn(relabel_epoch=1, scope="all")
    model.alpha = torch.full((8,), 0.9)
    _, _, m = _epoch(method, model, 1)
    assert method.y_cur.tolist() == [0, 0, 0, 2, 1, 1, 1, 1]   # samples 0 and 1 relabelled to class 0
    assert m["relabeled"] == 2
    assert m["recovered_flipped"] == 0.5 and m["relabel_restored"] == 0.5   # sample 0 restored, 1 not
    # scope low: only samples outside the top floor(0.7 * 8) = 5 attentions are candidates
    method, model, z, alpha = _scn(relabel_epoch=1, scope="low")
    model.alpha = torch.tensor([0.2, 0.9, 0.9, 0.9, 0.8, 0.7, 0.6, 0.5])   # sample 0 low, sample 1 high
    _, _, m = _epoch(method, model, 1)
    assert method.y_cur.tolist() == [0, 1, 0, 2, 1, 1, 1, 1]
    assert m["relabeled"] == 1 and m["recovered_flipped"] == 0.5


def test_scn_model_scales_logits_and_keeps_argmax():
    cfg = resolve_config(make_config("synthfer", "paper", method="scn", device="cpu"))
    assert cfg.attention_on == "features"       # an Ada-DF switch; SCN always scales the logits
    torch.manual_seed(0)
    model = SCNMethod.build_model(cfg, 7).eval()
    assert model.attention_on == "logits"
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
        z = model.net.fc(out["features"])
    a = out["attention"]
    assert a.shape == (4,) and torch.all((a > 0) & (a < 1))
    assert torch.allclose(out["logits"], a[:, None] * z, atol=1e-6)
    assert torch.equal(out["logits"].argmax(1), z.argmax(1))


# ----------------------------------------------------------------------------- tiny fit

def _tiny_fit_cfg(root, run_dir, method, **kw):
    base = dict(method=method, data_root=str(root), run_dir=str(run_dir), image_size=32, recipe="light",
                batch_size=16, epochs=2, max_train_samples=32, max_test_samples=16, progress=False,
                num_workers=0, track_samples=0, noise_rate=0.25, noise_seed=1, seed=3, device="cpu")
    base.update(kw)
    return make_config("synthfer", "official", **base)


@pytest.mark.slow
def test_scn_tiny_fit_state_and_resume(tiny_synthfer, tmp_path, monkeypatch):
    """Epoch 1, stop, resume for epoch 2: finite metrics, y_cur in the checkpoint, and resume reloads it."""
    from adadf_core.engine.loaders import load_splits
    from adadf_core.engine.train import fit

    cfg = _tiny_fit_cfg(tiny_synthfer, tmp_path / "run", "scn", scn_relabel_epoch=1)
    part = fit(cfg, stop_after_epoch=1)
    assert not part.finished and len(part.metrics) == 1
    y1 = torch.load(part.path / "checkpoint.pt", weights_only=False)["method"]["y_cur"]
    train = load_splits(resolve_config(cfg), with_train=True, with_train_eval=False)["train"]
    assert y1.shape == train.labels.shape and y1.dtype == torch.long

    loaded = []
    original = SCNMethod.load_state_dict

    def spy(self, state):
        original(self, state)
        loaded.append(self.y_cur.cpu().clone())

    monkeypatch.setattr(SCNMethod, "load_state_dict", spy)
    run = fit(_tiny_fit_cfg(tiny_synthfer, tmp_path / "run", "scn", scn_relabel_epoch=1, resume=True))
    assert len(loaded) == 1 and torch.equal(loaded[0], y1)   # resume continued from the stored labels
    m = run.metrics
    assert run.finished and m["epoch"].tolist() == [1, 2]
    for col in ("loss", "loss_ce", "loss_rr", "test_acc", "relabeled", "relabeled_share", "recovered_flipped",
                "attn_flipped", "attn_clean"):
        assert np.isfinite(m[col].to_numpy(dtype=float)).all(), col
    y2 = torch.load(run.path / "checkpoint.pt", weights_only=False)["method"]["y_cur"]
    # the stored labels differ from the given ones exactly where the logged shares say
    assert float((y1 != train.labels).float().mean()) == pytest.approx(m["relabeled_share"].iloc[0])
    assert float((y2 != train.labels).float().mean()) == pytest.approx(m["relabeled_share"].iloc[1])
    flipped = train.flipped
    assert float((y2[flipped] == train.clean_labels[flipped]).float().mean()) == pytest.approx(
        m["recovered_flipped"].iloc[1])
    assert (run.path / "attention_by_class.csv").is_file()
