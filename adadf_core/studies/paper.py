"""Every number the project quotes from a paper, in one table, with the backbone and the source of each.

Percent, best test epoch unless the metric says otherwise. These are never plotted on the same axis as our
SynthFER numbers: SynthFER has no paper numbers, and the RAF-DB ones are shown beside it for orientation.
Sources: the Ada-DF paper (docs/METHOD.md §5 for Table 2, §8 for Table 4), SCN's and SLM-AEA's own
papers and repositories (§12.5, §11.8). EAC's noise numbers are ResNet-18 (the Ada-DF paper labels them
"ResNet50").
"""
from __future__ import annotations

from typing import Any, Optional

ADADF_BACKBONE = "ResNet-18 (MS-Celeb-1M)"
NOT_STATED = "backbone not stated in accessible sources"

PAPER_NUMBERS: dict[str, Any] = {
    # Ada-DF Table 2: the ablation (Ada-DF's own backbone and recipe)
    "ablation": {
        "raf": {"label": "RAF-DB", "backbone": ADADF_BACKBONE, "metric": "best test accuracy (%)",
                "baseline": 88.71, "cd_only": 89.28, "ld_only": 89.50, "adadf": 90.04},
        "affectnet7": {"label": "AffectNet-7", "backbone": ADADF_BACKBONE, "metric": "best test accuracy (%)",
                       "baseline": 64.58, "cd_only": 64.63, "ld_only": 64.95, "adadf": 65.34},
        "sfew": {"label": "SFEW 2.0", "backbone": ADADF_BACKBONE, "metric": "best test accuracy (%)",
                 "baseline": 53.90, "cd_only": 56.05, "ld_only": 60.23, "adadf": 60.46},
    },
    # each comparison method's own published number: (accuracy %, backbone, source)
    "comparison": {
        "raf": {"scn": (87.03, "ResNet-18", "SCN README (RAF-DB only); Ada-DF Table 3"),
                "slm_aea": (92.82, NOT_STATED, "SLM-AEA abstract")},
        "affectnet7": {"slm_aea": (62.26, NOT_STATED, "SLM-AEA abstract (class count unknown)")},
        "sfew": {"slm_aea": (67.91, NOT_STATED, "SLM-AEA abstract")},
    },
    # Ada-DF Table 4: RAF-DB under symmetric label noise
    "noise": {
        "label": "RAF-DB", "backbone": "ResNet-18", "metric": "test accuracy (%) under symmetric label noise",
        "adadf": {0.1: 87.81, 0.2: 86.67, 0.3: 84.38},
        "scn": {0.1: 82.18, 0.2: 80.10, 0.3: 77.46},
        "eac": {0.1: 88.02, 0.2: 86.05, 0.3: 84.42},
    },
}
# which paper column a data set is compared with (SynthFER has no paper numbers: RAF-DB's, labelled so)
PAPER_DATASET_FOR = {"raf": "raf", "synthfer": "raf", "affectnet7": "affectnet7", "sfew": "sfew"}


def ablation_numbers(dataset: str) -> Optional[dict]:
    """Table 2's numbers for the paper data set ``dataset`` is compared with, or None."""
    return PAPER_NUMBERS["ablation"].get(PAPER_DATASET_FOR.get(dataset, ""))


def comparison_numbers(dataset: str) -> dict[str, tuple[float, str, str]]:
    """method -> (accuracy %, backbone, source) for every method with a published number on the paper data
    set ``dataset`` is compared with: Ada-DF's baseline and Ada-DF from Table 2, SCN and SLM-AEA from their
    own papers."""
    key = PAPER_DATASET_FOR.get(dataset, "")
    ablation = PAPER_NUMBERS["ablation"].get(key)
    out: dict[str, tuple[float, str, str]] = {}
    if ablation:
        out["baseline"] = (ablation["baseline"], ablation["backbone"], "Ada-DF Table 2, best epoch")
        out["adadf"] = (ablation["adadf"], ablation["backbone"], "Ada-DF, best epoch")
    out.update(PAPER_NUMBERS["comparison"].get(key, {}))
    return out


def noise_number(method: str, noise) -> float:
    """Table 4's accuracy (fraction) of ``method`` at noise rate ``noise``, NaN where the paper has none."""
    try:
        return PAPER_NUMBERS["noise"][method][round(float(noise), 2)] / 100
    except (KeyError, ValueError):
        return float("nan")
