"""SynthFER's two ambiguity models: the structured one held to FERPlus's vote statistics, the option itself."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adadf_core.data import synthfer
from adadf_core.data.synthfer import CLASS_NAMES, SynthFERError, calibration
from adadf_core.data.synthfer.annotators import CONFUSION, MEAN_WEIGHT, sample_labels
from adadf_core.data.synthfer.params import _normalise_params

IX = {name: i for i, name in enumerate(CLASS_NAMES)}


@pytest.fixture(scope="module")
def table():
    return calibration.calibration_table(n=50_000, seed=0)


def test_structured_model_is_within_every_tolerance(table):
    """Each FERPlus statistic (overall shares, per-class self shares, the eight main confusions) is matched
    by the structured model within the stated tolerance, at a 50,000-face draw."""
    off = table[~table["structured_within"]]
    assert off.empty, "outside the tolerance:\n" + off.to_string()
    assert len(table) == len(calibration.OVERALL) + len(calibration.SELF_SHARE) + len(calibration.CONFUSIONS)


def test_structured_main_confusions_are_ferplus_ones_and_unstructured_are_not():
    """The eight largest off-diagonal vote shares are FERPlus's eight pairs (Fear -> Surprise, Sadness ->
    Neutral, ...) for the structured model; the unstructured model confuses other pairs."""
    structured = calibration.synthfer_statistics(30_000, seed=3, ambiguity_model="structured")
    unstructured = calibration.synthfer_statistics(30_000, seed=3, ambiguity_model="unstructured")
    assert calibration.main_confusions(structured["share"]) == set(calibration.CONFUSIONS)
    assert calibration.main_confusions(unstructured["share"]) != set(calibration.CONFUSIONS)
    share = structured["share"]
    fear = share[IX["Fear"]].copy()
    fear[IX["Fear"]] = 0
    assert CLASS_NAMES[int(np.argmax(fear))] == "Surprise"


def test_unstructured_model_is_far_from_ferplus(table):
    """The option keeps today's model, which a test could not mistake for the calibrated one: almost no
    unanimous faces and about twice FERPlus's vote entropy."""
    row = table.set_index("statistic")
    assert row.loc["unanimous", "unstructured"] < 0.1 < row.loc["unanimous", "ferplus"]
    assert row.loc["mean vote entropy / log 7", "unstructured"] > 1.5 * row.loc["mean vote entropy / log 7", "ferplus"]


def test_fitted_constants_are_a_fixed_point_of_the_fit():
    """One more fitting step from the committed constants moves them by less than the tolerances: the
    constants are what ``fit_structured`` converges to, not typed-in values."""
    weight, rows = calibration.fit_structured(iterations=1, n=80_000, seed=1)
    assert np.abs(weight - np.asarray(MEAN_WEIGHT)).max() < 0.02
    assert np.abs(rows - np.asarray(CONFUSION)).max() < 0.02
    # and a start far from them is pulled towards them
    flat = np.full((7, 7), 1 / 6) - np.eye(7) / 6
    _, moved = calibration.fit_structured(iterations=3, n=40_000, seed=1, confusion=flat)
    assert np.abs(moved - np.asarray(CONFUSION)).max() < np.abs(flat - np.asarray(CONFUSION)).max() / 2


def test_vote_statistics_by_hand():
    votes = np.array([[10, 0, 0, 0, 0, 0, 0],      # unanimous Surprise
                      [0, 5, 5, 0, 0, 0, 0],       # a tie: top share 0.5
                      [0, 0, 4, 3, 3, 0, 0]])      # top share 0.4 (Disgust)
    s = calibration.vote_statistics(votes, np.random.default_rng(0))
    assert s["unanimous"] == pytest.approx(1 / 3)
    assert s["top vote share < 0.5"] == pytest.approx(1 / 3)
    assert s["top vote share < 0.6"] == pytest.approx(2 / 3)
    h2 = math.log(2) / math.log(7)
    h3 = -(0.4 * math.log(0.4) + 2 * 0.3 * math.log(0.3)) / math.log(7)
    assert s["mean vote entropy / log 7"] == pytest.approx((0 + h2 + h3) / 3)
    assert s["share"][IX["Surprise"], IX["Surprise"]] == 1.0
    assert np.isnan(s["share"][IX["Neutral"]]).all()          # no face with a Neutral majority


def test_subsample_votes_draws_without_replacement():
    rng = np.random.default_rng(0)
    votes = np.array([[5, 5, 0, 0, 0, 0, 0]] * 20_000 + [[3, 0, 0, 0, 0, 0, 1]])
    sub = calibration.subsample_votes(votes, 2, rng)
    assert (sub.sum(1) == 2).all() and (sub <= votes).all()
    # hypergeometric: P(1, 1) = 5 * 5 / C(10, 2) = 25 / 45
    assert (sub[:-1, 0] == 1).mean() == pytest.approx(25 / 45, abs=0.015)
    few = np.array([[2, 1, 0, 0, 0, 0, 0]])
    assert (calibration.subsample_votes(few, 10, rng) == few).all()       # fewer than k votes: all kept


def test_structured_latent_mixture():
    """No admixture on the dominant class; ambiguity 0 gives pure expressions; the model's own annotator
    noise and ambiguity are filled in."""
    p = _normalise_params({"ambiguity_model": "structured"})
    assert (p["ambiguity"], p["annotator_noise"]) == (1.0, 0.03)
    lab = sample_labels(4000, np.random.default_rng(0), p)
    assert np.allclose(lab["latent"].sum(1), 1.0)
    pure = sample_labels(500, np.random.default_rng(0), dict(p, ambiguity=0.0))
    assert ((pure["latent"] == 0) | (pure["latent"] == 1)).all()
    assert _normalise_params({})["ambiguity_model"] == "structured"          # the study's model is the default
    u = _normalise_params({"ambiguity_model": "unstructured"})
    assert (u["ambiguity"], u["annotator_noise"]) == (0.8, 0.1)


def test_ambiguity_model_option_on_disk(tmp_path, capsys):
    """``--ambiguity-model structured`` is recorded in synthfer.json; an unstructured root records no such key
    (byte-identical to the roots written before the option); asking a root for the other model is refused
    with the difference named; an unknown model is refused with the accepted names."""
    s_root, u_root = tmp_path / "s", tmp_path / "u"
    assert synthfer.cli_main(["--out", str(s_root), "--n-train", "6", "--n-test", "3", "--no-progress",
                              "--ambiguity-model", "structured"]) == 0
    params = json.loads((s_root / "synthfer.json").read_text())["params"]
    assert params["ambiguity_model"] == "structured" and params["annotator_noise"] == 0.03
    synthfer.generate(u_root, n_train=6, n_test=3, progress=False, ambiguity_model="unstructured")
    assert "ambiguity_model" not in json.loads((u_root / "synthfer.json").read_text())["params"]
    assert synthfer.generate(u_root, n_train=6, n_test=3, progress=False,
                             ambiguity_model="unstructured")["seconds"] == 0.0                       # reused
    synthfer.generate(s_root, n_train=6, n_test=3, progress=False)                  # the default is structured
    with pytest.raises(SynthFERError, match=r"'ambiguity_model': \('structured', 'unstructured'\)"):
        synthfer.generate(s_root, n_train=6, n_test=3, progress=False, ambiguity_model="unstructured")
    with pytest.raises(SynthFERError, match="ambiguity_model='clustered' is not one of unstructured, structured"):
        synthfer.generate(tmp_path / "x", n_train=6, n_test=3, progress=False, ambiguity_model="clustered")
    assert not (tmp_path / "x").exists()


def test_the_documented_ferplus_figures_are_the_ones_calibrated_to():
    """docs/SYNTHFER.md quotes FERPlus's figures; they must be the constants the tests hold SynthFER to."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "SYNTHFER.md").read_text()
    for name, value in calibration.SELF_SHARE.items():
        assert f"{name} {value:.3f}" in text, name
    for (a, b), value in calibration.CONFUSIONS.items():
        assert f"{a}→{b} {value:.3f}" in text, (a, b)
    shares = re.search(r"below 0\.5 in ([\d.]+) % of images, below 0\.6 in ([\d.]+) %, unanimous in ([\d.]+) %", text)
    assert shares, "the overall shares are not quoted"
    quoted = [float(v) / 100 for v in shares.groups()]
    assert quoted == pytest.approx([calibration.OVERALL[k] for k in
                                    ("top vote share < 0.5", "top vote share < 0.6", "unanimous")])
    assert f"log 7 = {calibration.OVERALL['mean vote entropy / log 7']:.3f}" in text
