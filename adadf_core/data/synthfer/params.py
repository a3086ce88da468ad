"""The generator's parameters: their defaults, their validation, and the error SynthFER raises."""
from __future__ import annotations

from typing import Any

from adadf_core.data.synthfer.annotators import AMBIGUITY_MODELS, MODEL_DEFAULTS, RAF_TRAIN_COUNTS

# ambiguity and annotator_noise: None = the ambiguity model's own value (annotators.MODEL_DEFAULTS)
DEFAULTS: dict[str, Any] = dict(
    n_train=2000, n_test=4000, seed=0, ambiguity_model="structured", ambiguity=None, annotators=(10, 40),
    annotator_noise=None,
    image_size=100, original_size=(160, 220), intensity=(0.65, 1.3), expr_jitter=0.85,
    dirichlet_alpha=0.4, class_counts=RAF_TRAIN_COUNTS, occluder_prob=0.25, glasses_prob=0.12,
    noise_std=(2.0, 12.0), blur=(0.0, 1.6), rotation_deg=30.0,
)


class SynthFERError(ValueError):
    """A SynthFER root or parameter problem (message names the path or value)."""


def _normalise_params(params: dict) -> dict:
    """``DEFAULTS`` updated with ``params``, each value cast to its type and range-checked."""
    p = dict(DEFAULTS)
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise SynthFERError(f"unknown SynthFER parameter(s) {unknown}; expected some of {sorted(DEFAULTS)}")
    p.update(params)
    check_ambiguity_model(p["ambiguity_model"])
    for key, value in MODEL_DEFAULTS[p["ambiguity_model"]].items():
        if p[key] is None:
            p[key] = value
    for key in ("annotators", "original_size", "intensity", "noise_std", "blur", "class_counts"):
        p[key] = [float(v) if key in ("intensity", "noise_std", "blur") else int(v) for v in p[key]]
    for key in ("n_train", "n_test", "seed", "image_size"):
        p[key] = int(p[key])
    for key in ("ambiguity", "annotator_noise", "expr_jitter", "dirichlet_alpha", "occluder_prob",
                "glasses_prob", "rotation_deg"):
        p[key] = float(p[key])
    checks = [
        ("n_train", p["n_train"] >= 1), ("n_test", p["n_test"] >= 1),
        ("ambiguity", 0.0 <= p["ambiguity"] <= 1.0),
        ("annotators", len(p["annotators"]) == 2 and 1 <= p["annotators"][0] <= p["annotators"][1]),
        ("annotator_noise", 0.0 <= p["annotator_noise"] <= 1.0),
        ("image_size", p["image_size"] >= 16),
        ("original_size", len(p["original_size"]) == 2 and 64 <= p["original_size"][0] <= p["original_size"][1]),
        ("class_counts", len(p["class_counts"]) == 7 and min(p["class_counts"]) >= 0 and sum(p["class_counts"]) > 0),
        ("intensity", len(p["intensity"]) == 2 and 0 <= p["intensity"][0] <= p["intensity"][1]),
        ("dirichlet_alpha", p["dirichlet_alpha"] > 0),
    ]
    for name, ok in checks:
        if not ok:
            raise SynthFERError(f"SynthFER parameter {name}={p[name]!r} is out of range")
    return p



def check_ambiguity_model(model: str) -> str:
    """``model`` when it is one of ``AMBIGUITY_MODELS``, else a ``SynthFERError`` naming it and them."""
    if model not in AMBIGUITY_MODELS:
        raise SynthFERError(f"SynthFER parameter ambiguity_model={model!r} is not one of {', '.join(AMBIGUITY_MODELS)}")
    return model


def recorded_params(p: dict) -> dict:
    """The parameters as ``synthfer.json`` records them. The unstructured model is recorded without an
    ``ambiguity_model`` key, exactly as generator version 2 wrote it before the option existed, so its roots
    stay byte-identical and are reused."""
    return {k: v for k, v in p.items() if not (k == "ambiguity_model" and v == "unstructured")}
