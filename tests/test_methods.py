"""Methods: Ada-DF's step loss recomputed by hand, the class-distribution miners, ramps, crop quirk."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adadf_core.config import make_config, resolve_config
from adadf_core.methods import METHODS, Method, RunContext, get_method
from adadf_core.methods.adadf import AdaDFMethod, CDOnlyMethod, LDOnlyMethod
from adadf_core.methods.baseline import BaselineMethod
from adadf_core.methods.diagnostics import choose_tracked

C = 7


class FakeSet(torch.utils.data.Dataset):
    """A data set with the datasets.py attributes, fixed random images (no augmentation)."""

    def __init__(self, n=28, size=32, gt=False, flip=0):
        g = torch.Generator().manual_seed(1)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.clean_labels = torch.arange(n) % C
        self.labels = self.clean_labels.clone()
        self.labels[:flip] = (self.labels[:flip] + 1) % C
        self.flipped = self.labels != self.clean_labels
        self.class_names = [f"c{i}" for i in range(C)]
        self.num_classes = C
        self.gt_distribution = torch.softmax(torch.randn(n, C, generator=g), 1) if gt else None
        self.names = [f"s{i}" for i in range(n)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), i


class Recorder(nn.Module):
    """Wraps a model and keeps every output dict (detached) and the number of forward calls."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.outputs = []

    def forward(self, x):
        out = self.model(x)
        self.outputs.append({k: v.detach().clone() for k, v in out.items()})
        return out


def make_cfg(**kw):
    base = dict(image_size=32, batch_size=8, epochs=2, track_samples=4, progress=False)
    base.update(kw)
    return resolve_config(make_config("synthfer", "official", **base))


def build(cls=AdaDFMethod, ds=None, track=False, **kw):
    torch.manual_seed(0)
    cfg = make_cfg(**kw)
    ds = ds if ds is not None else FakeSet()
    method = cls(cfg, C, ds, RunContext(train_eval_set=ds if track else None))
    model = cls.build_model(cfg, C)
    return cfg, ds, method, model


def by_hand(out, labels, D, cfg, epoch, group=None):
    """docs/METHOD.md §2–§3 written out with plain torch ops."""
    o1, o2, att = out["aux_logits"].float(), out["logits"].float(), out["attention"].float()
    n = o1.shape[0]
    e, b = float(epoch), float(cfg.epoch_threshold)
    w_ce, w_kl = (1.0, math.exp(-(1 - e / b) ** 2)) if e <= b else (math.exp(-(1 - b / e) ** 2), 1.0)
    ce = F.cross_entropy(o1, labels)
    abar = att.mean(1)
    size = group or n
    top = int(cfg.rr_ratio * size)
    srt = abar.sort(descending=True).values
    low = srt[top:] if cfg.rr_low_group == "rest" else srt[n - (size - top):]   # lowest: size - top crops
    rr = max(0.0, cfg.rr_margin - float(srt[:top].mean() - low.mean()))
    w = cfg.lambda_min + (cfg.lambda_max - cfg.lambda_min) * (abar - abar.min()) / (abar.max() - abar.min() + 1e-12)
    d = torch.softmax(o1, 1)
    f = (1 - w[:, None]) * d + w[:, None] * D[labels]
    kl = (f * (f.log() - torch.log_softmax(o2, 1))).sum() / (group or n)
    return dict(w_ce=w_ce, w_kl=w_kl, loss_ce=float(ce), loss_rr=rr, loss_kl=float(kl),
                loss=w_ce * float(ce) + w_kl * float(kl) + rr)


def test_training_step_matches_hand_computation():
    cfg, ds, method, model = build(rr_margin=0.5)          # large margin so RR is active
    D = torch.softmax(torch.randn(C, C), 1)
    method.D = D.clone()
    rec = Recorder(model)
    images, labels = ds.images[:8], ds.labels[:8]
    loss, logs = method.training_step(rec, images, labels, torch.arange(8), 2, 0, 3)
    assert torch.isfinite(loss)
    ref = by_hand(rec.outputs[-1], labels, D, cfg, epoch=2)
    for key in ("loss", "loss_ce", "loss_kl", "loss_rr", "w_ce", "w_kl"):
        assert float(logs[key]) == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
    assert float(loss.detach()) == pytest.approx(ref["loss"], rel=1e-5)
    assert ref["loss_rr"] > 0
    loss.backward()     # nothing detached but D: the auxiliary branch gets KL gradients too
    assert model.branch1.fc.weight.grad.abs().sum() > 0 and model.head1.weight.grad.abs().sum() > 0


def test_variants_targets_differ():
    D = torch.softmax(torch.randn(C, C), 1)
    images, labels = FakeSet().images[:8], FakeSet().labels[:8]
    kl = {}
    for cls in (AdaDFMethod, LDOnlyMethod, CDOnlyMethod):
        cfg, ds, method, model = build(cls)
        method.D = D.clone()
        rec = Recorder(model)
        _, logs = method.training_step(rec, images, labels, torch.arange(8), 1, 0, 3)
        out = rec.outputs[-1]
        logp = torch.log_softmax(out["logits"], 1)
        d = torch.softmax(out["aux_logits"], 1)
        target = {"ld_only": d, "cd_only": D[labels]}.get(cls.variant)
        if target is not None:
            expect = (target * (target.log() - logp)).sum() / 8
            assert float(logs["loss_kl"]) == pytest.approx(float(expect), rel=1e-5)
        kl[cls.variant] = float(logs["loss_kl"])
    assert len(set(round(v, 6) for v in kl.values())) == 3


@pytest.mark.parametrize("epoch,w_ce,w_kl", [(1, 1.0, 0.641), (2, 1.0, 0.895), (3, 1.0, 1.0),
                                             (4, 0.939, 1.0), (10, 0.613, 1.0)])
def test_ramp_weights_logged(epoch, w_ce, w_kl):
    cfg, ds, method, model = build(epoch_threshold=3)
    _, logs = method.training_step(model, ds.images[:8], ds.labels[:8], torch.arange(8), epoch, 0, 3)
    assert logs["w_ce"] == pytest.approx(w_ce, abs=1e-3)
    assert logs["w_kl"] == pytest.approx(w_kl, abs=1e-3)


def direct_mined_D(model, ds, t, offdiag_value):
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(ds.images)["aux_logits"], 1)
    model.train()
    D = torch.empty(C, C)
    for c in range(C):
        m = probs[ds.labels == c].mean(0)
        if m[c] >= t:
            D[c] = m
        else:
            D[c] = offdiag_value
            D[c, c] = t
    return D


@pytest.mark.parametrize("t", [0.14, 0.9])
def test_eval_pass_miner_matches_direct_computation(t):
    cfg, ds, method, model = build(threshold=t, cd_source="eval_pass", fallback_offdiag="code")
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, drop_last=False,
                                         generator=torch.Generator().manual_seed(0))
    rec = Recorder(model)
    record = method.end_epoch(rec, 1, loader)
    metrics = record.metrics
    assert len(rec.outputs) == 4                      # one more full pass over the loader
    assert model.training                             # back in train mode
    expect = direct_mined_D(model, ds, t, 0.4 / (C - 1))
    assert torch.allclose(method.D, expect, atol=1e-5)
    rows = method.D.sum(1)
    fb = method.fallback
    assert torch.allclose(rows[~fb], torch.ones(int((~fb).sum())), atol=1e-5)
    assert torch.allclose(rows[fb], torch.full((int(fb.sum()),), t + 0.4), atol=1e-5)
    assert metrics["fallback_classes"] == float(fb.sum())
    if t > 0.5:
        assert bool(fb.all())                          # an untrained net is far from 0.9 confident
    assert record.class_distribution.shape == (C, C)


def test_train_pass_accumulates_during_training_without_extra_pass():
    cfg, ds, method, model = build(threshold=0.1, cd_source="train_pass", fallback_offdiag="paper")
    rec = Recorder(model)
    probs, labels = [], []
    for s in range(3):
        idx = torch.arange(8 * s, 8 * s + 8)
        method.training_step(rec, ds.images[idx], ds.labels[idx], idx, 1, s, 3)
        probs.append(torch.softmax(rec.outputs[-1]["aux_logits"], 1))
        labels.append(ds.labels[idx])
    n_calls = len(rec.outputs)
    method.end_epoch(rec, 1, None)                     # train_pass never touches the loader
    assert len(rec.outputs) == n_calls                 # no extra pass
    probs, labels = torch.cat(probs), torch.cat(labels)
    for c in range(C):
        m = probs[labels == c].mean(0)
        if m[c] >= 0.1:
            assert torch.allclose(method.D[c], m, atol=1e-5)
        else:
            assert method.D[c, c] == pytest.approx(0.1)
            assert method.D[c].sum() == pytest.approx(1.0, abs=1e-5)   # paper fallback sums to 1


@pytest.mark.parametrize("quirk", [True, False])
def test_crop_batch_quirk_divisor_and_group(quirk):
    cfg, ds, method, model = build(batch_size=4, crop_batch_quirk=quirk, rr_margin=0.9)
    method.D = torch.softmax(torch.randn(C, C), 1)
    crops = ds.images[:12].view(4, 3, 3, 32, 32)       # 4 images x 3 crops
    labels = ds.labels[:4]
    rec = Recorder(model)
    _, logs = method.training_step(rec, crops, labels, torch.arange(4), 2, 0, 3)
    rows = labels.repeat_interleave(3)
    ref = by_hand(rec.outputs[-1], rows, method.D, cfg, 2, group=4 if quirk else None)
    assert rec.outputs[-1]["logits"].shape[0] == 12
    assert float(logs["loss_kl"]) == pytest.approx(ref["loss_kl"], rel=1e-5)
    assert float(logs["loss_rr"]) == pytest.approx(ref["loss_rr"], rel=1e-5)
    other = by_hand(rec.outputs[-1], rows, method.D, cfg, 2, group=None if quirk else 4)
    assert abs(other["loss_kl"] - ref["loss_kl"]) > 1e-4  # the switch matters (divisor 4 vs 12)


def test_noise_and_gt_metrics():
    ds = FakeSet(n=14, gt=True, flip=5)
    cfg, ds, method, model = build(ds=ds, threshold=0.1)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, shuffle=False)
    for images, labels, idx in loader:
        method.training_step(model, images, labels, idx, 1, 0, 2)
    m = method.end_epoch(model, 1, loader).metrics
    for key in ("kl_gt_label", "kl_gt_class", "kl_gt_fused", "js_gt_label", "js_gt_class", "js_gt_fused",
                "attn_flipped", "attn_clean", "recovered_flipped"):
        assert key in m and math.isfinite(m[key]), key
    assert 0 <= m["js_gt_fused"] <= math.log(2) + 1e-6
    assert 0 <= m["recovered_flipped"] <= 1 and 0 < m["attn_flipped"] < 1
    # the label-distribution KL over the pass recomputed directly
    model.eval()
    with torch.no_grad():
        d = torch.softmax(model(ds.images)["aux_logits"], 1)
    model.train()
    gt = ds.gt_distribution
    kl = (gt * (gt.log() - d.log())).sum(1).mean()
    assert m["kl_gt_label"] == pytest.approx(float(kl), rel=1e-4)


def test_tracked_record_shapes_and_attention_stats():
    ds = FakeSet(n=14)
    cfg, ds, method, model = build(ds=ds, track=True, track_samples=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, shuffle=False, drop_last=True)
    for s, (images, labels, idx) in enumerate(loader):
        method.training_step(model, images, labels, idx, 1, s, 2)
    rec = method.end_epoch(model, 1, loader)
    tr = rec.tracked
    assert tr["label_dist"].shape == (5, C) and tr["attention_raw"].shape == (5,)
    assert abs(tr["label_dist"].sum(1) - 1).max() < 1e-5
    assert ((tr["attention_weight"] >= cfg.lambda_min - 1e-6) & (tr["attention_weight"] <= 1 + 1e-6)).all()
    labels = ds.labels[method.diagnostics.tracked_indices].numpy()
    assert (tr["class_dist"] == method.D[labels].numpy()).all()
    att = rec.attention_rows
    assert sum(r["count"] for r in att) == 14 and all(0 < r["mean"] < 1 for r in att)


def test_choose_tracked_is_stratified_and_deterministic():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 2)
    a = choose_tracked(labels, 7, seed=3)
    assert torch.equal(a, choose_tracked(labels, 7, seed=3))
    assert len(a) == 7 and len(set(a.tolist())) == 7
    counts = torch.bincount(labels[a], minlength=3)
    assert counts.tolist() == [3, 2, 2]
    assert len(choose_tracked(labels, 100, 0)) == 57


def test_baseline_step_is_cross_entropy():
    cfg, ds, method, model = build(BaselineMethod, method="baseline")
    assert not hasattr(model, "branch2")
    rec = Recorder(model)
    loss, logs = method.training_step(rec, ds.images[:8], ds.labels[:8], torch.arange(8), 1, 0, 3)
    expect = F.cross_entropy(rec.outputs[-1]["logits"], ds.labels[:8])
    assert float(loss.detach()) == pytest.approx(float(expect), rel=1e-6)
    record = method.end_epoch(model, 1, None)
    assert record.metrics == {} and record.class_distribution is None and record.tracked is None
    assert method.initial_record().tracked is None


def test_registry_and_state_roundtrip():
    assert set(METHODS) == {"baseline", "ld_only", "cd_only", "adadf", "scn", "slm_aea"}
    assert get_method("adadf") is AdaDFMethod
    with pytest.raises(ValueError, match=r"unknown method .nope.; expected one of " + ", ".join(METHODS) + "$"):
        get_method("nope")
    cfg, ds, method, model = build()
    method.D = torch.rand(C, C)
    other = AdaDFMethod(cfg, C, ds)
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.D, method.D)
    with pytest.raises(ValueError, match="D of shape"):
        other.load_state_dict({"D": torch.zeros(3, 3)})


def test_each_ablation_variant_describes_the_target_its_code_computes():
    """Notebook 03 prints ``describe()`` per variant: the target it names is the one ``variant_target`` returns."""
    from adadf_core.ops.adadf_ops import VARIANTS, variant_target
    g = torch.Generator().manual_seed(0)
    d, rows = torch.rand(5, 7, generator=g).softmax(1), torch.rand(5, 7, generator=g).softmax(1)
    w = torch.rand(5, generator=g)
    named = {"(1-ŵ)·d + ŵ·D[y]": (1 - w)[:, None] * d + w[:, None] * rows, "d": d, "D[y]": rows}
    for variant in VARIANTS:
        text = get_method(variant).describe().split("target f = ")[1]
        assert torch.allclose(variant_target(variant, d, rows, w), named[text]), variant


def test_every_method_but_the_baseline_describes_itself_in_one_line():
    base = Method.describe()
    for name, cls in METHODS.items():
        line = cls.describe()
        assert "\n" not in line and (line == base) == (name == "baseline"), name
