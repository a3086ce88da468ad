"""The three places where `official` now does what the authors' code does (issue 12), each pinned to
hand-computed values, and the switch that keeps the earlier behaviour (docs/METHOD.md §9):

* SFEW rank regularisation under ``crop_batch_quirk``: the low group is the B - floor(0.7 B) lowest crops
  (``rr_low_group="lowest"``), not every crop outside the high group (``"rest"``);
* precision: ``amp="auto"`` is fp32 on CUDA (mixed precision is ``mixed`` / ``bf16`` / ``fp16``);
* AffectNet: the mining pass draws its own balanced subset (``mining_subset="redraw"``), not the training
  pass's (``"same"``).
"""
import numpy as np
import pytest
import torch

from adadf_core.runtime import device as devmod
from adadf_core.ops.adadf_ops import rank_regularization
from adadf_core.config import TrainConfig, legacy_switch_values, make_config, resolve_config
from adadf_core.data.dataset import BalancedUndersampler
from adadf_core.engine.loaders import make_train_loader


# ---------------------------------------------------------------------- 1. SFEW rank regularisation
def test_official_low_group_is_the_lowest_crops_for_16_images():
    a = torch.arange(160, dtype=torch.float32)     # 16 images x 10 crops, attention = crop number
    # high: the top floor(0.7*16) = 11 crops 149..159, mean 154
    # lowest: 16 - 11 = 5 crops 0..4, mean 2 -> gap 152;  rest: 149 crops 0..148, mean 74 -> gap 80
    assert float(rank_regularization(a, 0.7, 200.0, group_size=16, low_group="lowest")) == pytest.approx(48.0)
    assert float(rank_regularization(a, 0.7, 200.0, group_size=16, low_group="rest")) == pytest.approx(120.0)


def test_lowest_low_group_sends_gradient_to_16_crops_only():
    a = torch.rand(160, generator=torch.Generator().manual_seed(0)).requires_grad_()
    rank_regularization(a, 0.7, 5.0, group_size=16, low_group="lowest").backward()
    touched = a.grad != 0
    assert int(touched.sum()) == 16
    order = torch.argsort(a.detach(), descending=True)
    assert bool(touched[order[:11]].all()) and bool(touched[order[-5:]].all())
    assert a.grad[order[0]] == pytest.approx(-1 / 11) and a.grad[order[-1]] == pytest.approx(1 / 5)


def test_low_groups_agree_without_a_group_size():
    a = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7])    # high top 3 (0.9, 0.7, 0.5), low the other 2 either way
    for low in ("lowest", "rest"):
        assert float(rank_regularization(a, 0.7, 1.0, low_group=low)) == pytest.approx(1.0 - (0.7 - 0.2))


def test_low_group_errors_name_the_value():
    with pytest.raises(ValueError, match="low_group='bottom'.*lowest, rest"):
        rank_regularization(torch.rand(10), low_group="bottom")
    with pytest.raises(ValueError, match="group size 16"):      # 16 images but only 10 rows
        rank_regularization(torch.rand(10), group_size=16, low_group="lowest")


def test_profiles_set_the_low_group():
    assert resolve_config(make_config("sfew", "official")).rr_low_group == "lowest"
    assert resolve_config(make_config("sfew", "paper")).rr_low_group == "rest"
    assert resolve_config(make_config("sfew", "official", rr_low_group="rest")).rr_low_group == "rest"


# ------------------------------------------------------------------------------------ 2. precision
def test_official_precision_on_cuda_is_fp32():
    cuda = torch.device("cuda")                   # amp_dtype needs no GPU for these answers
    assert resolve_config(make_config("raf", "official")).amp == "auto"
    assert devmod.amp_dtype(cuda, "auto") is None and devmod.amp_dtype(cuda, "off") is None
    assert devmod.amp_dtype(cuda, "bf16") is torch.bfloat16 and devmod.amp_dtype(cuda, "fp16") is torch.float16
    assert devmod.needs_grad_scaler(cuda, "fp16") and not devmod.needs_grad_scaler(cuda, "auto")
    assert devmod.amp_dtype(torch.device("cpu"), "mixed") is None          # never autocast on the CPU


def test_unknown_precision_names_the_value():
    with pytest.raises(ValueError, match="amp='half'.*auto, mixed, bf16, fp16, off"):
        devmod.amp_dtype(torch.device("cuda"), "half")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_is_bf16_where_supported_and_auto_runs_fp32_on_cuda():
    cuda = torch.device("cuda")
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert devmod.amp_dtype(cuda, "mixed") is want
    lin = torch.nn.Linear(8, 8).to(cuda)
    with devmod.autocast_context(cuda, "auto"):
        assert lin(torch.randn(4, 8, device=cuda)).dtype == torch.float32
    with devmod.autocast_context(cuda, "mixed"):
        assert lin(torch.randn(4, 8, device=cuda)).dtype == want
    env = devmod.environment(cuda)
    assert set(env["tf32"]) == {"cudnn_conv", "matmul"}


# ---------------------------------------------------------------- 3. AffectNet mining-pass subset
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2])     # class counts 4, 3, 5: m = 3 per class


def subset_by_hand(seed, epoch, draw):
    """The rule of docs/METHOD.md §6 written out: per class 3 of its samples without replacement from a
    generator seeded by (seed, epoch[, draw]), then the 9 shuffled."""
    rng = np.random.default_rng([seed, epoch] + ([draw] if draw else []))
    chosen = [rng.choice(np.nonzero(LABELS == c)[0], size=3, replace=False) for c in range(3)]
    return rng.permutation(np.concatenate(chosen)).tolist()


def test_redraw_gives_the_mining_pass_its_own_subset():
    s = BalancedUndersampler(LABELS, seed=4, redraw=True)
    s.set_epoch(2)
    train_pass, mining_pass = list(s), list(s)
    assert train_pass == subset_by_hand(4, 2, 0)
    assert mining_pass == subset_by_hand(4, 2, 1)
    assert sorted(train_pass) != sorted(mining_pass)        # a different subset, not only a new order
    s.set_epoch(2)
    assert list(s) == train_pass                              # a resumed epoch starts from the same draw


def test_same_reuses_the_training_subset():
    s = BalancedUndersampler(LABELS, seed=4, redraw=False)
    s.set_epoch(2)
    assert list(s) == list(s) == subset_by_hand(4, 2, 0)


class Labelled(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = torch.as_tensor(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.zeros(1), int(self.labels[i]), i


@pytest.mark.parametrize("choice", ["redraw", "same"])
def test_loader_passes_follow_mining_subset(choice):
    cfg = resolve_config(make_config("affectnet7", "official", batch_size=3, mining_subset=choice))
    loader, sampler, _ = make_train_loader(cfg, Labelled(LABELS), "cpu")
    sampler.set_epoch(1)
    passes = [torch.cat([idx for _, _, idx in loader]).tolist() for _ in range(2)]
    assert passes[0] == subset_by_hand(cfg.seed, 1, 0)
    assert passes[1] == subset_by_hand(cfg.seed, 1, 1 if choice == "redraw" else 0)


def test_official_redraws_and_old_records_keep_their_behaviour():
    assert resolve_config(make_config("affectnet7", "official")).mining_subset == "redraw"
    old_sfew = dict(dataset="sfew", profile="official", crop_batch_quirk=True, cd_source="eval_pass")
    old_aff = dict(dataset="affectnet8", profile="official", crop_batch_quirk=True, cd_source="eval_pass")
    old_raf = dict(dataset="raf", profile="official", crop_batch_quirk=True, cd_source="eval_pass")
    assert legacy_switch_values(old_sfew)["rr_low_group"] == "rest"
    assert legacy_switch_values(old_aff)["mining_subset"] == "same"
    assert legacy_switch_values(old_raf) == {"rr_low_group": "lowest", "mining_subset": "redraw"}
    assert TrainConfig.from_record(old_sfew).rr_low_group == "rest"
    assert TrainConfig.from_record(dict(old_sfew, rr_low_group="lowest")).rr_low_group == "lowest"
