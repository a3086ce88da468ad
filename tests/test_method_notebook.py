"""Notebook 00 (the method on a hand-made batch) executed with papermill: no error, its figures, and its
printed and saved numbers equal what the adadf_core functions (and plain numpy) give on the same batch.

It needs no training and runs in seconds, so it is not marked slow."""
from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pytest
import torch

from adadf_core.ops import adadf_ops as adadf
from adadf_core.config import make_config, resolve_config
from adadf_core.pipeline.notebook import project_root

NOTEBOOK = project_root() / "notebooks" / "00_method.ipynb"
FIGURES = ("00_loss_weight_ramps", "00_class_distributions", "00_fusion_sample")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """(executed notebook, its JSON record, output folder) for the default parameters."""
    import papermill

    tmp = tmp_path_factory.mktemp("method")
    out = tmp / "results"
    papermill.execute_notebook(str(NOTEBOOK), str(tmp / "00_method.ipynb"), parameters={"output_dir": str(out)},
                               cwd=str(NOTEBOOK.parent), kernel_name="python3", progress_bar=False)
    nb = nbformat.read(str(tmp / "00_method.ipynb"), as_version=4)
    record = json.loads((out / "tables" / "00_method.json").read_text())
    return nb, record, out


def stdout_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def tensors(record):
    i = record["inputs"]
    return (torch.tensor(i["labels"]), torch.tensor(i["aux_logits"]), torch.tensor(i["logits"]),
            torch.tensor(i["attention_pair"]), torch.tensor(i["pass_labels"]), torch.tensor(i["pass_aux_logits"]))


def test_executes_without_errors_and_writes_its_figures(executed):
    nb, _, out = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0]
    stderr = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000, name
    # the slider cell drew its starting point with a plain call (a PNG in the cell's own outputs)
    slider_cell = next(c for c in nb.cells if c.cell_type == "code" and "FloatSlider" in c.source)
    assert any("image/png" in o.get("data", {}) for o in slider_cell.outputs)


def test_settings_come_from_the_preset(executed):
    _, record, _ = executed
    cfg = resolve_config(make_config("synthfer", "official"))
    assert record["config"] == {k: getattr(cfg, k) for k in record["config"]}
    ramps = np.array(record["loss_weights"])
    assert ramps.shape == (cfg.epochs, 2)
    assert np.allclose(ramps, [adadf.loss_weights(e, cfg.epoch_threshold) for e in range(1, cfg.epochs + 1)])


def test_saved_tensors_equal_the_functions_on_the_same_batch(executed):
    _, record, _ = executed
    c = record["config"]
    labels, o1, o2, pair, pass_labels, pass_o1 = tensors(record)
    d = torch.softmax(o1, dim=1)
    assert np.allclose(record["label_dist"], d, atol=1e-6)
    abar = pair.mean(dim=1)
    assert np.allclose(record["attention"], abar, atol=1e-6)
    assert record["loss_rr"] == pytest.approx(float(adadf.rank_regularization(abar, c["rr_ratio"], c["rr_margin"])),
                                              abs=1e-6)
    w = adadf.normalize_attention(abar, c["lambda_min"], c["lambda_max"])
    assert np.allclose(record["weight"], w, atol=1e-6)
    miner = adadf.ClassDistributionMiner(d.shape[1])
    miner.update(d, labels)
    miner.update(torch.softmax(pass_o1, dim=1), pass_labels)
    D = miner.compute(c["threshold"], c["fallback_offdiag"])
    assert np.allclose(record["class_dist"], D, atol=1e-6)
    assert record["fallback"] == miner.fallback.tolist() and any(record["fallback"]) and not all(record["fallback"])
    targets = adadf.adadf_targets(o1, pair, labels, D, "adadf", c["lambda_min"], c["lambda_max"])
    assert np.allclose(record["fused"], targets["fused"], atol=1e-6)


def test_fusion_and_kl_loss_by_hand(executed):
    """f = (1 - w) d + w D[y] and L_KL = mean_i sum_j f (log f - log softmax o_2), in numpy, and the printed value."""
    nb, record, _ = executed
    labels, o1, o2, pair, _, _ = tensors(record)
    d, w, D = np.array(record["label_dist"]), np.array(record["weight"]), np.array(record["class_dist"])
    fused = (1 - w[:, None]) * d + w[:, None] * D[labels.numpy()]
    assert np.allclose(record["fused"], fused, atol=1e-6)
    z = o2.double().numpy()
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    kl = float((fused * (np.log(fused) - log_p)).sum(1).mean())
    assert record["loss_kl"] == pytest.approx(kl, abs=1e-5)
    printed = re.search(r"L_KL = ([0-9.]+)", stdout_of(nb))
    assert printed and float(printed.group(1)) == pytest.approx(kl, abs=2e-6)
    assert float(printed.group(1)) == pytest.approx(float(adadf.kl_target_loss(torch.tensor(record["fused"]), o2)),
                                                    abs=1e-6)


def test_each_section_gives_its_equation_cites_the_method_and_ends_with_what_to_see():
    md = [c.source for c in nbformat.read(str(NOTEBOOK), as_version=4).cells if c.cell_type == "markdown"]
    assert md[0].startswith("# 00") and "What you will see" in md[0]
    starts = [i for i, text in enumerate(md) if re.match(r"## \d+ ·", text)]
    assert len(starts) == 8
    for n, (a, b) in enumerate(zip(starts, starts[1:] + [len(md)]), 1):
        if n <= 7:                                                   # 8 is the slider section
            assert "docs/METHOD.md §" in md[a] and "$$" in md[a], md[a].splitlines()[0]
        assert any(text.startswith("**What to see.**") for text in md[a + 1:b]), md[a].splitlines()[0]
