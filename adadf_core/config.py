"""Training configuration: one plain dataclass, per-data-set presets and the two profiles.

`official` reproduces the authors' code (the published numbers came from it); `paper` follows the text.
Every place where they differ is a named switch (docs/METHOD.md §9). A switch left at ``None`` takes the
profile's value when the config is resolved; a value you set yourself always wins.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from adadf_core.utils.fileio import read_json

PROFILES = ("official", "paper")

# docs/METHOD.md §9
PROFILE_SWITCHES: dict[str, dict[str, Any]] = {
    "official": dict(fallback_offdiag="code", attention_on="logits", image_size=224,
                     crop_batch_quirk=True, rr_low_group="lowest", rr_margin=0.07, cd_source="eval_pass",
                     mining_subset="redraw", detach_target=False, freeze_trunk_bn=False),
    "paper": dict(fallback_offdiag="paper", attention_on="features", image_size=100,
                  crop_batch_quirk=False, rr_low_group="rest", rr_margin=0.07, cd_source="eval_pass",
                  mining_subset="redraw", detach_target=False, freeze_trunk_bn=False),
}
# docs/METHOD.md §6 (+ the embedded data set). Values here override the dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "raf": dict(batch_size=64, threshold=0.7, epoch_threshold=3),
    "affectnet7": dict(batch_size=64, threshold=0.5, epoch_threshold=5),
    "affectnet8": dict(batch_size=64, threshold=0.5, epoch_threshold=5),
    "sfew": dict(batch_size=16, threshold=0.5, epoch_threshold=5),
    "imagefolder": dict(batch_size=64, threshold=0.7, epoch_threshold=3),
    # SynthFER's CPU budget (make reproduce, three seeds of every Table 2 and Table 4 run, in under 30
    # minutes on 2 cores): 1,000 of the 2,000 training faces, 48x48 pixels, 3 epochs, the light recipe
    # (flip only: RandAugment + erasing slow learning over so few epochs). ê = 2 keeps the paper's shape
    # of the ramps (CE first, KL from the middle of training on). SCN's relabel epoch (10 of 70) and SLM's
    # ramp switch (7 of 40) are scaled to the short budget. README "Results on SynthFER" gives the
    # intervals this budget achieves. Full size (GPU): max_train_samples=None, image_size=224,
    # recipe="official", epochs=75, epoch_threshold=3 — the RAF-DB settings.
    "synthfer": dict(batch_size=64, threshold=0.7, epoch_threshold=2, image_size=48, epochs=3,
                     max_train_samples=1000, recipe="light", scn_relabel_epoch=2, slm_beta=1.0),
}


# Each comparison method's own recipe (docs/METHOD.md §11.6 and §12.4), for the "native" rows of the
# comparison: everything but the epoch count, which is the study's budget (native: SCN 70, SLM-AEA 40).
NATIVE_RECIPES: dict[str, dict[str, Any]] = {
    "scn": dict(recipe="scn", weight_decay=1e-4, batch_size=64, rr_margin=0.07),
    "slm_aea": dict(recipe="slm", batch_size=72, slm_schedule="cosine"),
}

# fields that do not change what a run computes (or only how fast): ignored when comparing configs
MACHINERY_FIELDS = ("resume", "reuse", "progress", "num_workers", "num_threads", "cache", "run_dir",
                    "device", "amp", "channels_last", "fused_adam", "trust_pickle", "pass_diagnostics")


@dataclass
class TrainConfig:
    """One training run. Each field's comment is its ``adadf train --help`` text (``cli.py`` reads it);
    the section comments become the help's groups."""
    # what and where
    dataset: str = "synthfer"                # synthfer | raf | affectnet7 | affectnet8 | sfew | imagefolder
    data_root: Optional[str] = None          # data set root folder (synthfer: none = the generated copy)
    run_dir: Optional[str] = None            # run folder (none = runs/<dataset>/<name from the settings>)
    method: str = "adadf"                    # baseline | adadf | ld_only | cd_only | scn | slm_aea
    profile: str = "official"                # official (the authors' code) | paper (the text): fills the switches
    backbone: str = "resnet18"               # resnet18 | resnet50
    pretrained: Optional[str] = None         # local backbone weights file (none = from scratch; never downloaded)
    # schedule (docs/METHOD.md §6)
    epochs: int = 75                         # training epochs
    batch_size: int = 64                     # images per batch (SFEW: images, each with 10 crops)
    lr: float = 1e-3                         # Adam learning rate
    weight_decay: float = 0.0                # Adam weight decay
    lr_gamma: float = 0.9                    # ExponentialLR factor per epoch (authors: --gamma)
    seed: int = 0                            # seed of initialisation, shuffling, augmentation and noise draws
    # Ada-DF hyper-parameters (docs/METHOD.md §2-§4)
    threshold: float = 0.7                   # t: class-distribution threshold (authors: --threshold)
    epoch_threshold: float = 3               # ê: epoch where the CE/KL ramps cross (authors: --beta)
    lambda_min: float = 0.2                  # λ_min: lowest normalised attention weight (authors: --min_weight)
    lambda_max: float = 1.0                  # λ_max: highest normalised attention weight (authors: --max_weight)
    rr_ratio: float = 0.7                    # share of the batch in the high-attention group (authors: --tops)
    # profile switches (none = the profile's value; docs/METHOD.md §9)
    fallback_offdiag: Optional[str] = None   # code | paper: off-diagonal of a fallback class row
    attention_on: Optional[str] = None       # logits | features: where the attention weight scales
    image_size: Optional[int] = None         # input size in pixels (official 224, paper 100)
    crop_batch_quirk: Optional[bool] = None  # SFEW: RR groups and KL divisor over images, not crops (the code)
    rr_low_group: Optional[str] = None       # lowest (the code: B - floor(0.7 B) crops) | rest: SFEW's RR low group
    rr_margin: Optional[float] = None        # rank-regularisation margin δ (authors: --margin_1)
    cd_source: Optional[str] = None          # eval_pass (an extra pass, the code) | train_pass: where D is mined
    mining_subset: Optional[str] = None      # redraw (the code) | same: AffectNet's subset in the mining pass
    detach_target: Optional[bool] = None     # detach the fused target from the auxiliary branch
    freeze_trunk_bn: Optional[bool] = None   # keep the frozen trunk's BatchNorm statistics fixed
    # data
    recipe: Optional[str] = None             # augmentation recipe: official | paper | light | none | scn | slm
    noise_rate: float = 0.0                  # share of training labels flipped at random (docs/METHOD.md §13)
    noise_seed: int = 0                      # seed of the label-noise draw
    noise_file: Optional[str] = None         # a noisy label file (RAF-DB list format) instead of noise_rate
    max_train_samples: Optional[int] = None  # use only the first N training images per class share (quick runs)
    max_test_samples: Optional[int] = None   # use only the first N test images per class share
    cache: str = "memory"                    # decoded-image cache: memory | mmap | none
    augment_device: str = "cpu"              # cpu (the recipe in the loader) | cuda (on the GPU, not pixel-exact)
    num_workers: Optional[int] = None        # loader workers (none: 0 on the CPU, 8 on CUDA; authors: --num_workers)
    # comparison methods (docs/METHOD.md §11–§12)
    scn_relabel_epoch: int = 10              # SCN: first epoch (1-based) that relabels
    scn_relabel_margin: float = 0.2          # SCN: δ2, relabel when max_c P_c - P_y exceeds it
    scn_relabel_scope: str = "all"           # SCN: all (code) | low (paper): which samples may be relabelled
    slm_k: float = 5.0                       # SLM-AEA: initial logit of the given label
    slm_p: float = 0.97                      # SLM-AEA: initial probability of the given label
    slm_step: float = 200.0                  # SLM-AEA: λ, step of the soft-label update
    slm_alpha: float = 1.6                   # SLM-AEA: α of the ramps
    slm_beta: float = 7.0                    # SLM-AEA: β, epoch where the ramps switch
    slm_nominal_batch: int = 72              # SLM-AEA: batch the step is divided by (and the test batch)
    slm_eval_mean: str = "batch"             # SLM-AEA: batch (faithful, test-batch mean) | running
    slm_schedule: str = "exponential"        # SLM-AEA: exponential (shared recipe) | cosine (native, per step)
    # machinery
    device: str = "auto"                     # auto | cpu | cuda | cuda:N
    amp: str = "auto"                        # auto = fp32 (the authors') | mixed (bf16, else fp16) | bf16 | fp16 | off
    channels_last: Optional[bool] = None     # channels_last memory format (none = on for CUDA; CPU from 160 px)
    fused_adam: Optional[bool] = None        # Adam's fused kernel (none = on: ~3x faster a step, the same update to float rounding; off = torch's default, as the authors)
    num_threads: Optional[int] = None        # torch CPU threads (none = torch's default)
    track_samples: int = 16                  # training samples whose distributions are logged every epoch
    pass_diagnostics: Optional[bool] = None  # d, ŵ, ā of every sample in the mining pass (none = with votes or noise)
    resume: bool = False                     # continue an interrupted run from its checkpoint.pt
    reuse: bool = False                      # return an existing finished run instead of raising
    trust_pickle: bool = False               # read weights/checkpoints with full unpickling (trusted files only)
    progress: bool = True                    # progress bars and one line per epoch
    # several processes (torchrun; docs/METHOD.md §6)
    ddp_attention_batch: str = "global"      # global | rank: RR and attention min-max over the global or own batch
    sync_bn: Optional[bool] = None           # BatchNorm of the global batch across processes (none = on)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}; "
                             f"expected some of: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = read_json(path, "run config")
        data = data.get("config", data)
        return cls.from_record({k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})

    @classmethod
    def from_record(cls, data: dict) -> "TrainConfig":
        """A config read back from a run folder or checkpoint: a switch the record predates gets the value
        that describes what that run computed (``legacy_switch_values``)."""
        return cls.from_dict({**legacy_switch_values(data), **data})


def legacy_switch_values(data: dict) -> dict[str, Any]:
    """For a recorded config without ``rr_low_group`` / ``mining_subset`` (runs made before they existed,
    docs/METHOD.md §9): the behaviour those runs had (every remaining crop in the low group; the training
    pass's AffectNet subset reused), or the profile's value where the switch could not matter."""
    profile = PROFILE_SWITCHES.get(data.get("profile", "official"), PROFILE_SWITCHES["official"])
    dataset, old = data.get("dataset"), {}
    if "rr_low_group" not in data:
        quirk = dataset == "sfew" and data.get("crop_batch_quirk")
        old["rr_low_group"] = "rest" if quirk else profile["rr_low_group"]
    if "mining_subset" not in data:
        mined = str(dataset).startswith("affectnet") and data.get("cd_source") == "eval_pass"
        old["mining_subset"] = "same" if mined else profile["mining_subset"]
    return old


def _choices() -> dict[str, tuple]:
    """Every field with a fixed set of values, read from the module that owns the list (imported here,
    lazily, so that ``config`` itself stays light)."""
    # here, not at the top: config stays free of torch (`adadf train --help` reads it)
    from adadf_core.ops import adadf_ops as adadf, scn_ops as scn
    from adadf_core.data import cache, classes
    from adadf_core.runtime import device
    from adadf_core.models import networks as model
    from adadf_core.data import transforms
    from adadf_core.methods import method_names
    from adadf_core.methods.adadf import CD_SOURCES, MINING_SUBSETS
    from adadf_core.methods.slm_aea import SCHEDULES
    from adadf_core.runtime.distributed import DDP_ATTENTION_BATCH
    from adadf_core.data.gpu_augment import AUGMENT_DEVICES
    from adadf_core.models.aea import EVAL_MEANS
    return {"profile": PROFILES, "method": method_names(), "dataset": classes.DATASET_NAMES,
            "backbone": model.BACKBONES, "fallback_offdiag": adadf.OFFDIAG_CHOICES,
            "attention_on": model.ATTENTION_ON, "cd_source": CD_SOURCES,
            "mining_subset": MINING_SUBSETS, "rr_low_group": adadf.RR_LOW_GROUPS, "recipe": transforms.RECIPES,
            "amp": device.AMP_CHOICES, "cache": cache.CACHE_MODES, "scn_relabel_scope": scn.SCOPES,
            "slm_eval_mean": EVAL_MEANS, "slm_schedule": SCHEDULES, "ddp_attention_batch": DDP_ATTENTION_BATCH,
            "augment_device": AUGMENT_DEVICES}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ranges(v: dict) -> list[tuple[str, bool, str]]:
    """(field, ok, what was expected) for every numeric field: the one place their ranges are checked."""
    def opt_at_least(name, low):
        return (name, v[name] is None or (isinstance(v[name], int) and v[name] >= low),
                f"none or an integer >= {low}")
    return [
        ("epochs", isinstance(v["epochs"], int) and v["epochs"] >= 1, "an integer >= 1"),
        ("batch_size", isinstance(v["batch_size"], int) and v["batch_size"] >= 2, "an integer >= 2"),
        ("lr", _finite(v["lr"]) and v["lr"] > 0, "a finite value > 0"),
        ("weight_decay", _finite(v["weight_decay"]) and v["weight_decay"] >= 0, "a finite value >= 0"),
        ("lr_gamma", _finite(v["lr_gamma"]) and 0 < v["lr_gamma"] <= 1, "a value in (0, 1]"),
        ("threshold", _finite(v["threshold"]) and 0.0 < v["threshold"] <= 1.0, "a value in (0, 1]"),
        ("epoch_threshold", _finite(v["epoch_threshold"]) and v["epoch_threshold"] > 0, "a value > 0"),
        ("lambda_min", _finite(v["lambda_min"]) and _finite(v["lambda_max"])
         and 0.0 <= v["lambda_min"] <= v["lambda_max"] <= 1.0, "0 <= lambda_min <= lambda_max <= 1"),
        ("rr_ratio", _finite(v["rr_ratio"]) and 0 < v["rr_ratio"] < 1, "a value in (0, 1)"),
        ("rr_margin", _finite(v["rr_margin"]) and v["rr_margin"] >= 0, "a finite value >= 0"),
        ("noise_rate", _finite(v["noise_rate"]) and 0.0 <= v["noise_rate"] < 1.0, "a value in [0, 1)"),
        ("image_size", isinstance(v["image_size"], int) and v["image_size"] >= 16, "an integer >= 16"),
        opt_at_least("max_train_samples", 1), opt_at_least("max_test_samples", 1),
        opt_at_least("num_threads", 1),
        opt_at_least("num_workers", 0),
        ("track_samples", isinstance(v["track_samples"], int) and v["track_samples"] >= 0, "an integer >= 0"),
        ("scn_relabel_epoch", isinstance(v["scn_relabel_epoch"], int) and v["scn_relabel_epoch"] >= 1,
         "an integer >= 1"),
        ("scn_relabel_margin", _finite(v["scn_relabel_margin"]) and v["scn_relabel_margin"] >= 0,
         "a finite value >= 0"),
        ("slm_p", _finite(v["slm_p"]) and 0 < v["slm_p"] < 1, "a value in (0, 1)"),
        ("slm_step", _finite(v["slm_step"]) and v["slm_step"] > 0, "a finite value > 0"),
        ("slm_beta", _finite(v["slm_beta"]) and v["slm_beta"] > 0, "a finite value > 0"),
        ("slm_nominal_batch", isinstance(v["slm_nominal_batch"], int) and v["slm_nominal_batch"] >= 1,
         "an integer >= 1"),
    ]


def make_config(dataset: str = "synthfer", profile: str = "official", **overrides) -> TrainConfig:
    """A config with the data set's preset applied, then ``overrides``. Not yet resolved."""
    names = _choices()["dataset"]
    if dataset not in names:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(names)}")
    values = dict(PRESETS.get(dataset, {}))
    values.update(overrides)
    return TrainConfig.from_dict(dict(dataset=dataset, profile=profile, **values))


def is_resolved(cfg: TrainConfig) -> bool:
    """True when every profile switch and the recipe have a value (``resolve_config`` ran)."""
    return cfg.recipe is not None and all(getattr(cfg, name) is not None for name in PROFILE_SWITCHES["official"])


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill every ``None`` switch from the profile and validate every choice and every numeric range.
    Returns a new config; resolving a resolved config gives an equal one. Entry points (CLI, notebooks,
    studies) resolve once; ``fit`` resolves only a config that is not resolved yet."""
    if cfg.profile not in PROFILES:
        raise ValueError(f"unknown profile {cfg.profile!r}; expected one of {', '.join(PROFILES)}")
    values = dataclasses.asdict(cfg)
    for name, value in PROFILE_SWITCHES[cfg.profile].items():
        if values[name] is None:
            values[name] = value
    if values["recipe"] is None:
        values["recipe"] = cfg.profile
    resolved = TrainConfig(**values)
    validate_config(resolved)
    return resolved


def validate_config(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming the field, its value and what was expected, for the first field with a
    value outside its choices or range. Cheap: ``fit`` checks every config it is given."""
    values = dataclasses.asdict(cfg)
    for name, allowed in _choices().items():
        if values[name] not in allowed:
            raise ValueError(f"{name}={values[name]!r} is not valid; expected one of {', '.join(allowed)}")
    for name, ok, expected in _ranges(values):
        if not ok:
            raise ValueError(f"{name}={values[name]!r} is not valid; expected {expected}")


def config_differences(a: TrainConfig, b: TrainConfig, ignore=MACHINERY_FIELDS) -> list[str]:
    """``"field: a != b"`` for every field (outside ``ignore``) where the two configs differ."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{k}: {da[k]!r} != {db[k]!r}" for k in da if k not in ignore and da[k] != db[k]]
