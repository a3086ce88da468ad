"""fit(): the run folder contract, resume equivalence, never overwriting, NaN handling."""
import hashlib
import math

import numpy as np
import pytest
import torch

from adadf_core.config import make_config
from adadf_core.methods.adadf import AdaDFMethod
from adadf_core.models.networks import load_model_state
from adadf_core.runs.writer import BEST_IS_LAST
from adadf_core.runs.reader import NotARunError, Run, list_runs
from adadf_core.runs.lock import RunExistsError
from adadf_core.engine.train import NonFiniteLossError, fit

pytestmark = pytest.mark.slow

C = 7


def tiny_cfg(root, run_dir, **kw):
    base = dict(data_root=str(root), run_dir=str(run_dir), image_size=32, recipe="light", batch_size=16,
                epochs=2, max_train_samples=32, max_test_samples=16, progress=False, num_workers=0,
                track_samples=6, noise_rate=0.25, noise_seed=1, seed=3)
    base.update(kw)
    return make_config("synthfer", "official", **base)


@pytest.fixture(scope="module")
def reference(tiny_synthfer, tmp_path_factory):
    """An uninterrupted 2-epoch Ada-DF run with label noise (SynthFER has ground-truth votes)."""
    import shutil
    run_dir = tmp_path_factory.mktemp("runs") / "ref"
    cfg = tiny_cfg(tiny_synthfer, run_dir)
    yield cfg, fit(cfg)
    shutil.rmtree(run_dir.parent, ignore_errors=True)


def test_run_folder_contract(reference):
    cfg, run = reference
    for name in ("config.json", "metrics.csv", "class_distributions.npy", "attention_by_class.csv",
                 "tracked.npz", "checkpoint.pt", "best_model.safetensors", "last_model.safetensors",
                 "confusion.npy", "confusion_best.npy",
                 "features.npz", "summary.json"):
        assert (run.path / name).is_file(), name
    assert not list(run.path.glob("*.tmp")) and not (run.path / "best_model.pt").exists()
    assert run.finished and run.config.method == "adadf" and run.config.image_size == 32
    assert run.environment["weights"] == "scratch"
    m = run.metrics
    assert list(m["epoch"]) == [1, 2]
    names = run.class_names
    assert len(names) == C
    for col in ["lr", "w_ce", "w_kl", "loss", "loss_ce", "loss_kl", "loss_rr", "train_acc", "test_acc",
                "seconds"] + [f"acc_{n}" for n in names]:
        assert col in m.columns and m[col].notna().all(), col
    for col in ("kl_gt_label", "kl_gt_class", "kl_gt_fused", "js_gt_label", "js_gt_class", "js_gt_fused",
                "attn_flipped", "attn_clean", "recovered_flipped"):
        assert col in m.columns and np.isfinite(m[col]).all(), col
    assert m["test_acc"].between(0, 1).all() and m["train_acc"].between(0, 1).all()
    assert m["lr"].iloc[1] == pytest.approx(cfg.lr * cfg.lr_gamma)
    assert m["w_kl"].iloc[0] == pytest.approx(math.exp(-(1 - 1 / cfg.epoch_threshold) ** 2))
    assert (m["js_gt_fused"] <= math.log(2)).all()

    D = run.class_distributions
    assert D.shape == (3, C, C) and D.dtype == np.float32
    assert np.allclose(np.diag(D[0]), cfg.threshold) and np.allclose(D[0].sum(1), 1)
    t = cfg.threshold
    for e in (1, 2):
        sums = D[e].sum(1)
        mined = np.isclose(sums, 1, atol=1e-4)
        fallback = np.isclose(sums, t + 0.4, atol=1e-4)     # official fallback rows
        assert (mined | fallback).all()
        assert (np.diag(D[e])[mined] >= t - 1e-6).all() and np.allclose(np.diag(D[e])[fallback], t)

    tr = run.tracked
    K = len(tr["indices"])
    assert K == 6 and len(set(tr["labels"].tolist())) == 6        # stratified: 6 different classes
    for key in ("label_dist", "class_dist", "fused"):
        assert tr[key].shape == (2, K, C)
    assert tr["attention_raw"].shape == (2, K) and tr["attention_weight"].shape == (2, K)
    assert tr["gt"].shape == (K, C) and np.allclose(tr["gt"].sum(1), 1, atol=1e-4)
    assert np.allclose(tr["class_dist"][1], D[2][tr["labels"]])

    att = run.attention_by_class
    assert list(att.columns[:5]) == ["epoch", "class", "mean", "std", "count"]
    assert len(att) == 2 * C and (att.groupby("epoch")["count"].sum() == 32).all()

    s = run.summary
    assert s["best_acc"] == pytest.approx(m["test_acc"].max())
    assert s["last_acc"] == pytest.approx(m["test_acc"].iloc[-1]) and s["last_epoch"] == 2
    assert "best test accuracy over epochs" in s["best_acc_note"]
    conf = run.confusion
    assert conf.shape == (C, C) and conf.sum() == 16
    assert np.trace(conf) / 16 == pytest.approx(s["last_acc"])
    f = run.features
    assert f["features"].shape == (16, 512) and f["labels"].shape == (16,)
    assert np.bincount(f["labels"] * C + f["preds"], minlength=C * C).reshape(C, C).tolist() == conf.tolist()

    model = run.load_model(best=False)
    assert not model.training
    assert [str(r.path) for r in list_runs(run.path.parent)] == [str(run.path)]


def test_finished_run_is_never_overwritten(reference, tiny_synthfer):
    cfg, run = reference
    stamp = (run.path / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(RunExistsError, match="finished run"):
        fit(cfg)
    again = fit(tiny_cfg(tiny_synthfer, run.path, reuse=True, progress=True))   # machinery may differ
    assert again.path == run.path and again.finished
    with pytest.raises(RunExistsError, match="lr"):
        fit(tiny_cfg(tiny_synthfer, run.path, reuse=True, lr=0.5))
    assert (run.path / "checkpoint.pt").stat().st_mtime_ns == stamp


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_is_bit_identical_and_nan_keeps_last_checkpoint(reference, tiny_synthfer, tmp_path,
                                                                monkeypatch):
    cfg_ref, ref = reference
    run_dir = tmp_path / "interrupted"
    cfg = tiny_cfg(tiny_synthfer, run_dir)
    part = fit(cfg, stop_after_epoch=1)
    assert not part.finished and len(part.metrics) == 1
    with pytest.raises(RunExistsError, match="resume"):
        fit(cfg)

    # a NaN in epoch 2: clear error, the epoch-1 checkpoint stays as it was
    before = _digest(run_dir / "checkpoint.pt")
    original = AdaDFMethod.training_step

    def poisoned(self, model, images, labels, indices, epoch, step, steps):
        loss, logs = original(self, model, images, labels, indices, epoch, step, steps)
        return (loss * float("nan") if epoch == 2 and step == 1 else loss), logs

    monkeypatch.setattr(AdaDFMethod, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2/2.*epoch 1"):
        fit(tiny_cfg(tiny_synthfer, run_dir, resume=True))
    monkeypatch.setattr(AdaDFMethod, "training_step", original)
    assert _digest(run_dir / "checkpoint.pt") == before
    assert len(Run(run_dir).metrics) == 1 and not Run(run_dir).finished

    # resume properly: identical to the uninterrupted reference
    done = fit(tiny_cfg(tiny_synthfer, run_dir, resume=True))
    assert done.finished
    a, b = ref.metrics.drop(columns="seconds"), done.metrics.drop(columns="seconds")
    assert a.columns.tolist() == b.columns.tolist()
    assert a.equals(b), (a.compare(b) if a.shape == b.shape else (a, b))
    assert np.array_equal(ref.class_distributions, done.class_distributions)
    for key, value in ref.tracked.items():
        assert np.array_equal(value, done.tracked[key]), key
    sa, sb = ref.load_model().state_dict(), done.load_model().state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(ref.features["features"], done.features["features"])
    assert ref.summary["best_acc"] == done.summary["best_acc"]


def test_checkpoint_that_does_not_fit_is_a_clear_error(reference):
    _, run = reference
    from adadf_core.models.networks import build_model
    state = run.load_model().state_dict()
    with pytest.raises(ValueError, match="checkpoint .*last_model.safetensors does not fit the model"):
        load_model_state(build_model("single", C), state, run.path / "last_model.safetensors")


def test_not_a_run_folder(tmp_path, tiny_synthfer):
    with pytest.raises(NotARunError, match="no config.json"):
        Run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a run folder"):
        fit(tiny_cfg(tiny_synthfer, tmp_path))


def test_sfew_tencrop_run(sfew_root, tmp_path):
    """TenCrop batches: crops flattened into the training batch, o_2 averaged over crops at test time."""
    cfg = make_config("sfew", "official", data_root=str(sfew_root), run_dir=str(tmp_path / "run"),
                      image_size=32, recipe="light", batch_size=4, epochs=1, progress=False,
                      track_samples=3, cd_source="train_pass")
    run = fit(cfg)
    m = run.metrics
    assert run.finished and np.isfinite(m[["loss", "loss_kl", "loss_rr"]].to_numpy()).all()
    assert run.features["features"].shape == (7, 512)                 # 7 test images, not 70 crops
    assert run.confusion.sum() == 7
    assert run.tracked["fused"].shape == (1, 3, C)
    assert run.attention_by_class["count"].sum() == 3 * 4 * 10         # 3 steps x 4 images x 10 crops


def test_a_finished_run_folder_is_lean(reference, tmp_path):
    """No optimiser state once a run is finished; its weights are safetensors that say what they are."""
    import json as _json

    from safetensors import safe_open
    from adadf_core.utils import checkpoints
    cfg, run = reference
    state = checkpoints.load(run.path / "checkpoint.pt")
    assert set(state) == {"epoch", "config", "method", "history"}         # no model, optimiser, RNG
    with safe_open(str(run.path / "best_model.safetensors"), "pt") as f:
        meta = _json.loads(f.metadata()["adadf"])
        assert meta["weights"] in ("best epoch", BEST_IS_LAST) and meta["config"]["method"] == "adadf"
    unfinished = fit(tiny_cfg(run.config.data_root, tmp_path / "part"), stop_after_epoch=1)
    size = lambda p: sum(f.stat().st_size for f in p.iterdir() if f.is_file())  # noqa: E731
    part_state = checkpoints.load(unfinished.path / "checkpoint.pt")
    assert "optimizer" in part_state and "rng" in part_state                 # an unfinished run can resume
    assert size(run.path) < 0.8 * size(unfinished.path) + (run.path / "features.npz").stat().st_size


def test_best_and_last_weights_are_one_file_only_when_the_best_epoch_is_the_last(reference, tiny_synthfer, tmp_path):
    """A study holds each set of weights once: a run whose best epoch is its last keeps one file under both
    names; a run whose best epoch came earlier keeps two different files, each loading its own epoch."""
    from safetensors.torch import load_file
    one = fit(tiny_cfg(tiny_synthfer, tmp_path / "one", epochs=1))
    best, last = one.path / "best_model.safetensors", one.path / "last_model.safetensors"
    assert best.stat().st_ino == last.stat().st_ino and best.stat().st_nlink == 2
    cfg, run = reference
    best_epoch = int(run.summary["best_epoch"])
    best, last = run.path / "best_model.safetensors", run.path / "last_model.safetensors"
    same = best.stat().st_ino == last.stat().st_ino
    assert same == (best_epoch == cfg.epochs)
    if not same:
        a, b = load_file(str(best)), load_file(str(last))
        assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_this_runs_adam_kernel_whatever_the_checkpoint_used(tiny_synthfer, tmp_path):
    """torch's load_state_dict takes fused/foreach from the saved groups; fused_adam is machinery (a run may
    resume with the other setting), so the resumed optimiser must keep its own kernel. An Adam built fused that
    steps through the loop fails under a GradScaler: the step a CUDA fp16 run takes, here with the CPU scaler."""
    from adadf_core.config import resolve_config
    from adadf_core.runtime.device import load_optimizer_state, make_optimizer

    def trained_state(fused):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = make_optimizer(model, resolve_config(make_config("synthfer", fused_adam=fused)), torch.device("cpu"))
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        return model, opt

    for saved, resumed in ((False, True), (True, False)):
        _, old = trained_state(saved)
        model, opt = trained_state(resumed)
        load_optimizer_state(opt, old.state_dict())
        assert opt.param_groups[0]["fused"] == (True if resumed else None)
        assert all(s["step"].dtype == torch.float32 and s["step"].device.type == "cpu" for s in opt.state.values())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
        model.zero_grad()
        scaler.scale(model(torch.randn(5, 4)).sum()).backward()
        scaler.step(opt)                          # torch's plain load_state_dict: AssertionError here for (False, True)
        scaler.update()
        assert all(int(s["step"]) == 2 for s in opt.state.values())

    # a whole run stopped with the loop and resumed with the fused kernel finishes
    part = fit(tiny_cfg(tiny_synthfer, tmp_path / "crossed", fused_adam=False), stop_after_epoch=1)
    assert not part.finished
    done = fit(tiny_cfg(tiny_synthfer, tmp_path / "crossed", resume=True))
    assert done.finished and len(done.metrics) == 2


def test_curve_split_is_evaluated_every_epoch_and_the_whole_test_split_after_the_last(tiny_synthfer, tmp_path):
    """``curve_test_samples``: the per-epoch curve on a stratified part of the test split, the whole split once
    after the last epoch. Training is untouched: the final accuracy equals the last-epoch accuracy of the same
    run evaluated on the whole split every epoch, and it is what the protocol's "last" and the summary report."""
    from adadf_core.studies import protocol

    common = dict(method="baseline", max_test_samples=None, noise_rate=0.0, track_samples=0)
    whole = fit(tiny_cfg(tiny_synthfer, tmp_path / "whole", **common))
    curve = fit(tiny_cfg(tiny_synthfer, tmp_path / "curve", curve_test_samples=14, **common))
    m, w = curve.metrics, whole.metrics
    assert m["final_test_acc"].isna().tolist() == [True, False]
    assert m["final_test_acc"].iloc[-1] == pytest.approx(w["test_acc"].iloc[-1], abs=1e-12)
    n_test = len(np.load(whole.path / "features.npz")["labels"])
    assert n_test == 35 and len(np.load(curve.path / "features.npz")["labels"]) == n_test
    assert 14 * m["test_acc"].iloc[0] == pytest.approx(round(14 * m["test_acc"].iloc[0]))   # 14 faces per epoch
    scores = protocol.run_scores(curve)
    assert scores["last_acc"] == pytest.approx(w["test_acc"].iloc[-1])
    assert scores["best_acc"] == pytest.approx(m["test_acc"].max())
    assert curve.summary["last_acc"] == pytest.approx(scores["last_acc"])
    assert "curve_test_samples" in curve.summary["last_acc_note"]
