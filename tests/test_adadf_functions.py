"""Hand-computed checks of the pure Ada-DF tensor functions (adadf_core/ops/adadf_ops.py)."""
import math

import pytest
import torch

from adadf_core.ops.adadf_ops import (ClassDistributionMiner, adadf_loss, adadf_targets, ambiguity_divergences, fuse,
                                      initial_class_distribution, js_divergence, kl_divergence, kl_target_loss,
                                      loss_weights, normalize_attention, rank_regularization, threshold_distribution)


# ------------------------------------------------------------------------------------- ramps
@pytest.mark.parametrize("epoch, w_ce, w_kl", [
    (1, 1.0, 0.641),   # exp(-(1 - 1/3)^2) = exp(-0.444)
    (2, 1.0, 0.895),   # exp(-(1/3)^2)
    (3, 1.0, 1.0),
    (4, 0.939, 1.0),   # exp(-(1 - 3/4)^2) = exp(-0.0625)
    (10, 0.613, 1.0),  # exp(-0.49)
    (75, 0.398, 1.0),  # exp(-0.96^2)
])
def test_loss_weights_table(epoch, w_ce, w_kl):
    got = loss_weights(epoch, 3)
    assert round(got[0], 3) == w_ce and round(got[1], 3) == w_kl


def test_loss_weights_continuous_at_threshold():
    for beta in (1, 3, 5.0):
        below, at, above = loss_weights(beta - 1e-6, beta), loss_weights(beta, beta), loss_weights(beta + 1e-6, beta)
        assert at == (1.0, 1.0)
        assert below == pytest.approx(at, abs=1e-6) and above == pytest.approx(at, abs=1e-6)


def test_loss_weights_rejects_bad_values():
    with pytest.raises(ValueError, match="epoch=0"):
        loss_weights(0, 3)
    with pytest.raises(ValueError, match="epoch_threshold=-1"):
        loss_weights(1, -1)


# ------------------------------------------------------------------------- rank regularisation
def test_rank_regularization_hand_case_and_gradient():
    # a = 0.50, 0.51, ..., 0.59 (shuffled). floor(0.7*10) = 7 high: 0.53..0.59, mean 0.56;
    # 3 low: 0.50, 0.51, 0.52, mean 0.51. gap 0.05 -> loss 0.07 - 0.05 = 0.02.
    a = (0.5 + 0.01 * torch.tensor([3., 9, 0, 5, 1, 8, 2, 7, 4, 6])).requires_grad_()
    loss = rank_regularization(a, ratio=0.7, margin=0.07)
    assert loss.item() == pytest.approx(0.02, abs=1e-6)
    loss.backward()
    # d loss / d a = -1/7 for the high group, +1/3 for the low group
    expected = torch.where(a.detach() >= 0.525, torch.tensor(-1 / 7), torch.tensor(1 / 3))
    torch.testing.assert_close(a.grad, expected)


def test_rank_regularization_zero_when_gap_exceeds_margin():
    a = torch.tensor([0.9, 0.8, 0.75, 0.7, 0.65, 0.6, 0.6, 0.55, 0.5, 0.45])
    # high mean 5.0/7 = 0.714, low mean 0.5: gap 0.214 > 0.07
    assert rank_regularization(a, 0.7, 0.07).item() == 0.0
    # SCN's margin 0.15 also below the gap; margin 0.3 gives 0.3 - 0.2143
    assert rank_regularization(a, 0.7, 0.3).item() == pytest.approx(0.3 - (5.0 / 7 - 0.5), abs=1e-6)


def test_rank_regularization_group_size():
    a = torch.tensor([1.0, 0.9, 0.3, 0.2, 0.1, 0.0])
    # actual batch: floor(0.7*6) = 4 high: mean 0.6, low mean 0.05, gap 0.55 -> 1 - 0.55
    assert rank_regularization(a, 0.7, 1.0).item() == pytest.approx(0.45, abs=1e-6)
    # configured group of 3: floor(0.7*3) = 2 high: mean 0.95, low (4 values) mean 0.15 -> 1 - 0.8
    assert rank_regularization(a, 0.7, 1.0, group_size=3).item() == pytest.approx(0.2, abs=1e-6)
    # SFEW quirk: 160 crops, configured batch 16 -> 11 high values
    b = torch.cat([torch.ones(11), torch.zeros(149)])
    assert rank_regularization(b, 0.7, 0.5, group_size=16).item() == 0.0    # gap exactly 1
    # without the quirk floor(0.7*160) = 112 high values: mean 11/112, low mean 0 -> 0.5 - 11/112
    assert rank_regularization(b, 0.7, 0.5).item() == pytest.approx(0.5 - 11 / 112, abs=1e-6)


def test_rank_regularization_errors():
    with pytest.raises(ValueError, match=r"expected \[B\]"):
        rank_regularization(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least one value in each group"):
        rank_regularization(torch.zeros(1))


# ------------------------------------------------------------------ attention normalisation
def test_normalize_attention_hand_case():
    a = torch.tensor([0.3, 0.5, 0.4, 0.7])
    # range 0.4: 0.3 -> 0.2, 0.7 -> 1.0, 0.5 -> 0.2 + 0.8*0.5 = 0.6, 0.4 -> 0.2 + 0.8*0.25 = 0.4
    torch.testing.assert_close(normalize_attention(a, 0.2, 1.0), torch.tensor([0.2, 0.6, 0.4, 1.0]))
    torch.testing.assert_close(normalize_attention(a, 0.0, 0.5), torch.tensor([0.0, 0.25, 0.125, 0.5]))


def test_normalize_attention_all_equal_gives_lam_min():
    w = normalize_attention(torch.full((5,), 0.37), 0.2, 1.0)
    assert not torch.isnan(w).any()
    torch.testing.assert_close(w, torch.full((5,), 0.2))


def test_normalize_attention_is_float32_from_bf16():
    w = normalize_attention(torch.tensor([0.25, 0.5, 0.75], dtype=torch.bfloat16))
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([0.2, 0.6, 1.0]))


# --------------------------------------------------------------------- class distributions
def test_initial_and_threshold_distributions():
    d0 = initial_class_distribution(3, 0.7)
    torch.testing.assert_close(d0, torch.tensor([[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]]))
    code = threshold_distribution(7, 0.7, "code")
    paper = threshold_distribution(7, 0.7, "paper")
    assert torch.allclose(torch.diagonal(code), torch.tensor(0.7))
    assert code[0, 1].item() == pytest.approx(0.4 / 6) and paper[0, 1].item() == pytest.approx(0.3 / 6)
    torch.testing.assert_close(code.sum(1), torch.full((7,), 1.1))     # t + 0.4
    torch.testing.assert_close(paper.sum(1), torch.ones(7))
    with pytest.raises(ValueError, match="offdiag='both'"):
        threshold_distribution(3, 0.5, "both")
    with pytest.raises(ValueError, match="threshold t=1.5"):
        initial_class_distribution(3, 1.5)


# Three classes, t = 0.5 (code and paper off-diagonals differ: 0.4/2 = 0.2 vs 0.5/2 = 0.25).
LABELS = torch.tensor([0, 0, 1, 1, 2])
PROBS = torch.tensor([
    [0.8, 0.1, 0.1],    # class 0 mean: [0.7, 0.15, 0.15], 0.7 >= 0.5 -> kept
    [0.6, 0.2, 0.2],
    [0.2, 0.4, 0.4],    # class 1 mean: [0.3, 0.4, 0.3], 0.4 < 0.5 -> threshold distribution
    [0.4, 0.4, 0.2],
    [0.25, 0.25, 0.5],  # class 2 mean: itself, exactly 0.5 >= 0.5 -> kept
])


def test_miner_hand_example_both_offdiag_variants():
    miner = ClassDistributionMiner(3, "cpu")
    miner.update(PROBS, LABELS)
    assert miner.counts.tolist() == [2, 2, 1]
    code = miner.compute(0.5, "code")
    torch.testing.assert_close(code, torch.tensor([[0.7, 0.15, 0.15], [0.2, 0.5, 0.2], [0.25, 0.25, 0.5]]))
    assert code[1].sum().item() == pytest.approx(0.9)                  # t + 0.4
    assert miner.fallback.tolist() == [False, True, False]
    torch.testing.assert_close(miner.means[1], torch.tensor([0.3, 0.4, 0.3]))
    paper = miner.compute(0.5, "paper")
    torch.testing.assert_close(paper, torch.tensor([[0.7, 0.15, 0.15], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]))


def test_miner_class_without_samples_falls_back():
    miner = ClassDistributionMiner(4)
    miner.update(torch.cat([PROBS, torch.zeros(5, 1)], 1), LABELS)
    d = miner.compute(0.5, "paper")
    assert miner.fallback.tolist() == [False, True, False, True]
    torch.testing.assert_close(d[3], torch.tensor([1 / 6, 1 / 6, 1 / 6, 0.5]))
    assert not torch.isnan(d).any()


def test_miner_two_batches_equal_one_and_reset():
    one, two = ClassDistributionMiner(3), ClassDistributionMiner(3)
    one.update(PROBS, LABELS)
    two.update(PROBS[:2], LABELS[:2])
    two.update(PROBS[2:], LABELS[2:])
    torch.testing.assert_close(two.sums, one.sums)
    assert torch.equal(two.counts, one.counts)
    torch.testing.assert_close(two.compute(0.5), one.compute(0.5))
    two.reset()
    assert two.sums.abs().sum() == 0 and two.counts.sum() == 0


def test_miner_reduce_hook_and_errors():
    miner = ClassDistributionMiner(3)
    miner.update(PROBS, LABELS)
    miner.reduce(lambda t: t.mul_(2))            # like all_reduce over two identical processes
    assert miner.counts.tolist() == [4, 4, 2]
    torch.testing.assert_close(miner.compute(0.5)[0], torch.tensor([0.7, 0.15, 0.15]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        miner.update(PROBS[:1], torch.tensor([3]))
    with pytest.raises(ValueError, match=r"expected \[B, 3\]"):
        miner.update(torch.zeros(2, 4), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- fusion and KL
D_ROWS = torch.tensor([[0.7, 0.15, 0.15], [0.2, 0.2, 0.6]])
LABEL_DIST = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])


def test_fuse_hand_example():
    # sample 0, w = 0.2: 0.8*[.5,.3,.2] + 0.2*[.7,.15,.15] = [.54, .27, .19]; sample 1, w = 1: D row
    f = fuse(LABEL_DIST, D_ROWS, torch.tensor([0.2, 1.0]))
    torch.testing.assert_close(f, torch.tensor([[0.54, 0.27, 0.19], [0.2, 0.2, 0.6]]))


def test_kl_target_loss_hand_example():
    f = torch.tensor([[0.54, 0.27, 0.19], [0.2, 0.2, 0.6]])
    # uniform target p = 1/3: KL_i = sum f ln f + ln 3
    # sample 0: .54 ln .54 + .27 ln .27 + .19 ln .19 = -1.001799 -> 0.096813
    # sample 1: 2 * .2 ln .2 + .6 ln .6 = -0.950271 -> 0.148342; mean 0.122577
    loss = kl_target_loss(f, torch.zeros(2, 3))
    assert loss.item() == pytest.approx(0.122577, abs=1e-5)
    assert kl_target_loss(f, torch.zeros(2, 3), divisor=1).item() == pytest.approx(0.245155, abs=1e-5)


def test_kl_target_loss_zero_when_target_matches_and_zero_entries():
    f = torch.tensor([[0.54, 0.27, 0.19], [0.2, 0.2, 0.6]])
    assert kl_target_loss(f, f.log() + 3.0).item() == pytest.approx(0.0, abs=1e-6)   # shift-invariant
    one_hot = torch.tensor([[1.0, 0.0, 0.0]])
    loss = kl_target_loss(one_hot, torch.zeros(1, 3))        # 0 log 0 = 0 -> ln 3
    assert loss.item() == pytest.approx(math.log(3), abs=1e-6)


def test_kl_target_loss_float32_from_bf16():
    f = torch.tensor([[0.54, 0.27, 0.19], [0.2, 0.2, 0.6]])
    logits = torch.tensor([[1.0, -0.5, 0.25], [0.0, 2.0, -1.0]], dtype=torch.bfloat16)
    loss = kl_target_loss(f.bfloat16(), logits)
    assert loss.dtype == torch.float32
    expected = kl_target_loss(f.bfloat16().float(), logits.float())
    assert loss.item() == expected.item()


def test_adadf_targets_variants_and_detach():
    aux = torch.log(LABEL_DIST).requires_grad_()            # softmax(aux) == LABEL_DIST
    att = torch.tensor([[0.3, 0.5], [0.6, 0.8]], requires_grad=True)   # means 0.4, 0.7 -> w 0.2, 1.0
    D = torch.tensor([[0.7, 0.15, 0.15], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 2])
    t = adadf_targets(aux, att, labels, D, "adadf", 0.2, 1.0)
    torch.testing.assert_close(t["label_dist"], LABEL_DIST)
    torch.testing.assert_close(t["class_rows"], D_ROWS)
    torch.testing.assert_close(t["weight"], torch.tensor([0.2, 1.0]))
    torch.testing.assert_close(t["fused"], torch.tensor([[0.54, 0.27, 0.19], [0.2, 0.2, 0.6]]))
    assert t["fused"].requires_grad                          # nothing detached by default
    torch.testing.assert_close(adadf_targets(aux, att, labels, D, "ld_only")["fused"], LABEL_DIST)
    torch.testing.assert_close(adadf_targets(aux, att, labels, D, "cd_only")["fused"], D_ROWS)
    assert not adadf_targets(aux, att, labels, D, "adadf", detach_target=True)["fused"].requires_grad
    with pytest.raises(ValueError, match="variant='both'"):
        adadf_targets(aux, att, labels, D, "both")


def test_adadf_loss_composition():
    torch.manual_seed(0)
    out = dict(logits=torch.randn(8, 3), aux_logits=torch.randn(8, 3), attention=torch.rand(8, 2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    D = initial_class_distribution(3, 0.7)
    p = adadf_loss(out, labels, D, epoch=1, epoch_threshold=3, rr_margin=0.5)
    assert p["w_ce"] == 1.0 and p["w_kl"] == pytest.approx(math.exp(-4 / 9))
    ce = torch.nn.functional.cross_entropy(out["aux_logits"], labels)
    torch.testing.assert_close(p["loss_ce"], ce)
    torch.testing.assert_close(p["loss"], ce + p["w_kl"] * p["loss_kl"] + p["loss_rr"])
    assert p["loss_rr"].item() > 0
    # crop quirk: KL divided by the configured batch (4) instead of 8 -> doubled
    q = adadf_loss(out, labels, D, epoch=1, kl_divisor=4, group_size=4, rr_margin=0.5)
    torch.testing.assert_close(q["loss_kl"], 2 * p["loss_kl"])


# ------------------------------------------------------------------------ ambiguity logging
def test_kl_and_js_divergences():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    q = torch.tensor([[0.25, 0.75], [0.0, 1.0]])
    kl = kl_divergence(p, q)
    assert kl[0].item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)  # 0.143841
    assert torch.isfinite(kl).all() and kl[1].item() > 20        # disjoint: capped by eps, no inf/NaN
    js = js_divergence(p, q)
    assert js[1].item() == pytest.approx(math.log(2), abs=1e-6)   # disjoint supports
    torch.testing.assert_close(js, js_divergence(q, p))
    torch.testing.assert_close(kl_divergence(p, p), torch.zeros(2))
    torch.testing.assert_close(js_divergence(p, p), torch.zeros(2))


def test_ambiguity_divergences_keys_and_renormalisation():
    gt = torch.tensor([[0.6, 0.2, 0.2]])
    code_row = torch.tensor([[0.7, 0.2, 0.2]])          # code fallback row (sums to 1.1), renormalised
    out = ambiguity_divergences(gt, gt.clone(), code_row, gt.clone())
    assert list(out) == ["kl_gt_label", "kl_gt_class", "kl_gt_fused", "js_gt_label", "js_gt_class", "js_gt_fused"]
    assert out["kl_gt_label"].item() == pytest.approx(0.0, abs=1e-6)
    expected = kl_divergence(gt, code_row / 1.1)
    torch.testing.assert_close(out["kl_gt_class"], expected)


def test_kl_gradient_is_finite_where_the_target_is_exactly_zero():
    # ld_only or lambda_min = 0 can give f = d with softmax entries that underflow to exactly 0;
    # torch.xlogy's backward would be 0/0 = NaN there.
    fused = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], requires_grad=True)
    loss = kl_target_loss(fused, logits)
    loss.backward()
    assert torch.isfinite(fused.grad).all() and torch.isfinite(logits.grad).all()
    # value: sample 1 = -log softmax(o)_0, sample 2 = 0.5 log 0.5 * 2 - 2 * 0.5 log(1/3)
    p0 = torch.softmax(torch.tensor([2.0, 0.0, -1.0]), 0)[0]
    expected = (-torch.log(p0) + (math.log(0.5) + math.log(3.0))) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
