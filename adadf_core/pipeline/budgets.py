"""How much compute each data set gets: the one place for the pipeline's budgets and the quick budgets.

* ``BUDGETS``: what ``make reproduce`` gives the notebooks per data set (None = the notebook's own default,
  i.e. the preset). SynthFER is sized for a 2-core CPU; the real data sets use the paper's schedule
  (75 epochs, image size from the profile).
* ``QUICK_RUN``: the tiny configuration every run shrinks to with ``quick=True`` (tests, smoke checks).
* ``QUICK_STUDY``: what the pipeline gives the studies with ``--quick`` (None = no budget of their own, so
  their preset points reuse the quick runs of notebooks 02-04).
"""
from __future__ import annotations

from typing import Any

SYNTHFER_BACKBONE = "synthfer-backbone"   # resolved to pretrain.synthfer_backbone()'s file before the notebooks run

_FULL = dict(epochs=75, seeds=[0], sensitivity_epochs=75, sensitivity_max_train=None, noise_epochs=75,
             noise_max_train=None)
BUDGETS: dict[str, dict[str, Any]] = {
    # SynthFER: every table at the preset budget (config.PRESETS["synthfer"]: 1,000 training faces, 48 px,
    # 6 epochs, the last epoch on 4,000 test faces). The headline, Table 2's baseline and Ada-DF, on `seeds`
    # (the seeds its 95 % paired interval needs; docs/RESULTS.md); every other row (cd_only, ld_only, SCN,
    # SLM-AEA, the noisy runs) on `study_seeds`, the first of them. Table 2's runs are also Table 4's 0 % row,
    # Table 1's centre point and notebook 08's baseline and Ada-DF rows. Table 4 at 20 % and 30 % noise
    # (-p noise_rates "[0.0, 0.1, 0.2, 0.3]" adds the paper's 10 %), Table 1 on ê only (-p sensitivity_grid None:
    # the paper's full grid). The time each notebook takes: timings.csv of the reference; how the budget was
    # chosen: docs/MEASUREMENTS.md. SynthFER runs start from a ResNet-18 pretrained on a separate SynthFER pool
    # (pretrain.py), as the paper's start from MS-Celeb-1M weights; -p pretrained None trains from scratch.
    "synthfer": dict(epochs=None, seeds=list(range(8)), study_seeds=[0, 1, 2], pretrained=SYNTHFER_BACKBONE,
                     sensitivity_grid={"epoch_threshold": [1, 2, 3]},
                     sensitivity_seeds=[0], noise_methods=["baseline", "adadf"], noise_rates=[0.0, 0.2, 0.3],
                     sensitivity_epochs=None, sensitivity_max_train=None,
                     noise_epochs=None, noise_max_train=None),
    "raf": dict(_FULL), "affectnet7": dict(_FULL), "affectnet8": dict(_FULL), "sfew": dict(_FULL),
    "imagefolder": dict(_FULL),
}

QUICK_RUN = dict(epochs=2, max_train_samples=64, max_test_samples=48, image_size=32, recipe="light",
                 batch_size=16, track_samples=4)

QUICK_STUDY: dict[str, Any] = dict(
    pretrained=None, epochs=None, seeds=[0, 1], study_seeds=None, sensitivity_seeds=[0],
    sensitivity_grid={"lambda_min": [0.0, 0.2]}, sensitivity_epochs=None,
    sensitivity_max_train=None, noise_rates=[0.0, 0.2], noise_methods=["baseline", "adadf"],
    noise_epochs=None, noise_max_train=None)


def budget_for(dataset: str, quick: bool = False) -> dict[str, Any]:
    """The parameters the pipeline gives notebooks for ``dataset`` (notebooks use it for None budgets)."""
    values = dict(BUDGETS.get(dataset, BUDGETS["imagefolder"]))
    if quick:
        values.update(QUICK_STUDY)
    return values
