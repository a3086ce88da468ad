"""Training configuration: one plain dataclass, per-data-set presets and the two profiles.

``TrainConfig`` is the fields every run has (``CommonConfig``, below) plus each method's own options, which
live in the method's file (``methods/<name>.py``: ``OPTIONS``, ``PRESETS``, ``NATIVE_RECIPE``) and are read
from it here.

`official` reproduces the authors' code (the published numbers came from it); `paper` follows the text.
Every place where they differ is a named switch (docs/METHOD.md §9). A switch left at ``None`` takes the
profile's value when the config is resolved; a value you set yourself always wins.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

from adadf_core.utils.fileio import read_json
from adadf_core.utils.suggest import did_you_mean

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
# docs/METHOD.md §6 (+ the embedded data set). Values here override the dataclass defaults; ``PRESETS``
# (below) adds each method file's own per-data-set values.
_COMMON_PRESETS: dict[str, dict[str, Any]] = {
    "raf": dict(batch_size=64, threshold=0.7, epoch_threshold=3),
    "affectnet7": dict(batch_size=64, threshold=0.5, epoch_threshold=5),
    "affectnet8": dict(batch_size=64, threshold=0.5, epoch_threshold=5),
    "sfew": dict(batch_size=16, threshold=0.5, epoch_threshold=5),
    "imagefolder": dict(batch_size=64, threshold=0.7, epoch_threshold=3),
    # SynthFER's CPU budget (docs/RESULTS.md says what it resolves; docs/MEASUREMENTS.md how it was chosen):
    # 1,000 of the 2,000 training faces at 48x48 pixels, 6 epochs with the learning rate decaying by 0.8 an epoch
    # (the baseline's last epochs move its accuracy by under half a point, as on RAF-DB after 75 epochs, and
    # the class-distribution miner leaves at most 2 of 7 rows in its fallback), the light recipe (flip only:
    # RandAugment + erasing slow learning over so few epochs). ê = 2 keeps the paper's shape of the ramps
    # (CE first, KL from a third of training on). Each epoch is evaluated on 800 of the 4,000 test faces (the
    # curve); the whole test split once, after the last epoch (the card's "last"). Each method file scales its
    # own schedule options to this budget (its PRESETS).
    # Full size (GPU): image_size=224, recipe="official", epochs=75, lr_gamma=0.9, epoch_threshold=3,
    # curve_test_samples=None — the RAF-DB settings.
    # One thread a run: the numbers are then the same on every machine (threads change float rounding), and
    # `adadf reproduce` trains one run per core side by side (pipeline/reproduce.py, cpu_workers).
    "synthfer": dict(batch_size=64, threshold=0.7, epoch_threshold=2, image_size=48, epochs=6, lr_gamma=0.8,
                     max_train_samples=1000, recipe="light", curve_test_samples=800, num_threads=1),
}


# fields that do not change what a run computes (or only how fast): ignored when comparing configs
MACHINERY_FIELDS = ("resume", "reuse", "progress", "num_workers", "num_threads", "cache", "run_dir",
                    "device", "amp", "channels_last", "fused_adam", "trust_pickle", "pass_diagnostics")


@dataclass
class CommonConfig:
    """The fields every run has. Each field's comment is its ``adadf train --help`` text (``field_help``
    reads it); the section comments become the help's groups. ``TrainConfig`` adds each method's options."""
    # what and where
    dataset: str = "synthfer"                # synthfer | raf | affectnet7 | affectnet8 | sfew | imagefolder
    data_root: Optional[str] = None          # data set root folder (synthfer: none = the generated copy)
    run_dir: Optional[str] = None            # run folder (none = runs/<dataset>/<name from the settings>)
    method: str = "adadf"                    # (the registered methods: field_help lists them)
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
    curve_test_samples: Optional[int] = None  # per-epoch test curve on the first N test images per class share; the whole test set only after the last epoch (final_test_acc, the card's "last"); none = the whole set every epoch
    cache: str = "memory"                    # decoded-image cache: memory | mmap | none
    augment_device: str = "cpu"              # cpu (the recipe in the loader) | cuda (on the GPU, not pixel-exact)
    num_workers: Optional[int] = None        # loader workers (none: 0 on the CPU, 8 on CUDA; authors: --num_workers)
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


# ------------------------------------------------------------------------------- each method's options
# A method's options live in its file, as plain literals (docs/METHOD.md §14):
#   OPTIONS_TITLE = "SCN (docs/METHOD.md §12)"                  its group in `adadf train --help`
#   OPTIONS = {"scn_relabel_epoch": (10, "an integer >= 1", "first epoch (1-based) that relabels"), ...}
#   PRESETS = {"synthfer": {"scn_relabel_epoch": 2}}            per data set, over the defaults
#   NATIVE_RECIPE = {"recipe": "scn", "weight_decay": 1e-4}     its own recipe (notebook 08's "native" rows)
# They are read from the file's text, not imported: `adadf train --help` starts without torch.
METHODS_DIR = Path(__file__).resolve().parent / "methods"
_LITERALS = ("OPTIONS_TITLE", "OPTIONS", "PRESETS", "NATIVE_RECIPE")
_NUM = r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)"
ACCEPTS_FORMS = ("a tuple of choices", "'an integer >= N'", "'a finite value'", "'a finite value >= N' (or > N)",
                 "'a value in (a, b)' ([ ] for closed ends)")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@functools.lru_cache(maxsize=None)
def _acceptor(spec: Any) -> Optional[Callable[[Any], bool]]:
    """The check that an option's "what it accepts" states (None when ``spec`` is none of ACCEPTS_FORMS);
    read once per spec, as ``validate_config`` asks for it on every run."""
    if isinstance(spec, tuple):
        return lambda v: v in spec
    text = str(spec)
    if m := re.fullmatch(rf"an integer >= {_NUM}", text):
        low = float(m[1])
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low
    if m := re.fullmatch(rf"a finite value(?: (>=|>) {_NUM})?", text):
        op, low = m[1], float(m[2] or 0)
        return lambda v: _finite(v) and (op is None or v > low or (op == ">=" and v == low))
    if m := re.fullmatch(rf"a value in ([\[(]){_NUM}, {_NUM}([\])])", text):
        lo, hi, lo_in, hi_in = float(m[2]), float(m[3]), m[1] == "[", m[4] == "]"
        return lambda v: _finite(v) and (lo < v or (lo_in and v == lo)) and (v < hi or (hi_in and v == hi))
    return None


@dataclass(frozen=True)
class MethodOption:
    """One ``TrainConfig`` field that a method owns (an entry of its file's ``OPTIONS``)."""
    name: str
    default: Any
    spec: Any          # what it accepts: one of ACCEPTS_FORMS
    help: str
    section: str       # its group in `adadf train --help`: the file's OPTIONS_TITLE
    source: str        # the method file

    @property
    def expected(self) -> str:
        return f"one of {', '.join(map(str, self.spec))}" if isinstance(self.spec, tuple) else str(self.spec)

    def accepts(self, value: Any) -> bool:
        return _acceptor(self.spec)(value)


@dataclass(frozen=True)
class MethodFile:
    """What one file of ``methods/`` registers (its ``@register_method`` names) and the options it owns."""
    path: str
    names: tuple[str, ...]
    options: tuple[MethodOption, ...]
    presets: dict
    native_recipe: dict


def _read_literals(path: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The file's top-level OPTIONS_TITLE / OPTIONS / PRESETS / NATIVE_RECIPE literals and the names its
    classes register, read without running the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found, names = {}, []
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in _LITERALS:
            try:
                found[target.id] = ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(f"{path}:{node.lineno}: {target.id} must be a plain literal (numbers, strings, "
                                 "tuples, dicts): config.py reads it without importing the file") from None
        if isinstance(node, ast.ClassDef):
            names += [d.args[0].value for d in node.decorator_list if isinstance(d, ast.Call)
                      and getattr(d.func, "id", None) == "register_method" and d.args
                      and isinstance(d.args[0], ast.Constant)]
    return found, tuple(names)


def _method_option(path: Path, section: str, name: str, entry: Any) -> MethodOption:
    where = f"{path}: OPTIONS[{name!r}]"
    if not (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[2], str)):
        raise ValueError(f"{where} must be (default, what it accepts, help text), got {entry!r}")
    default, spec, help_ = entry
    if type(default) not in (int, float, str, bool) or not name.isidentifier():
        raise ValueError(f"{where}: expected an identifier with an int, float, str or bool default, got {default!r}")
    try:
        accepts = _acceptor(spec)
    except TypeError:             # unhashable (a list of choices): none of ACCEPTS_FORMS
        accepts = None
    if accepts is None:
        raise ValueError(f"{where}: cannot read {spec!r} as what it accepts; expected {' or '.join(ACCEPTS_FORMS)}")
    if not accepts(default):
        raise ValueError(f"{where}: the default {default!r} is not {spec}")
    return MethodOption(name, default, spec, help_, section, str(path))


@functools.lru_cache(maxsize=None)
def method_files(folder: Path = METHODS_DIR) -> tuple[MethodFile, ...]:
    """Every file of ``methods/`` that registers a method, in file-name order (the order
    ``methods/__init__.py`` imports them), with the options each owns."""
    out = []
    for path in sorted(folder.glob("*.py")):
        found, names = _read_literals(path)
        if not names:
            if set(found) & {"OPTIONS", "PRESETS", "NATIVE_RECIPE"}:
                raise ValueError(f"{path}: has method options but registers no method (@register_method)")
            continue
        section = found.get("OPTIONS_TITLE", names[0])
        options = tuple(_method_option(path, section, k, v) for k, v in found.get("OPTIONS", {}).items())
        out.append(MethodFile(str(path), names, options, found.get("PRESETS", {}), found.get("NATIVE_RECIPE", {})))
    return tuple(out)


def method_options(folder: Path = METHODS_DIR) -> tuple[MethodOption, ...]:
    """Every method's options, refused where two files (or a file and ``CommonConfig``) claim one name."""
    owner = {f.name: "config.py (CommonConfig)" for f in fields(CommonConfig)}
    out = []
    for option in (o for f in method_files(folder) for o in f.options):
        if option.name in owner:
            raise ValueError(f"{option.source}: option {option.name!r} is already a field of {owner[option.name]}")
        owner[option.name] = option.source
        out.append(option)
    return tuple(out)


def config_class(options: tuple[MethodOption, ...]) -> type:
    """``CommonConfig`` plus one field per method option (its type is its default's)."""
    cls = dataclasses.make_dataclass("TrainConfig", [(o.name, type(o.default), dataclasses.field(default=o.default))
                                                     for o in options], bases=(CommonConfig,))
    cls.__module__ = __name__
    cls.__doc__ = "One training run: ``CommonConfig``'s fields and every method's options (its file's OPTIONS)."
    return cls


TrainConfig = config_class(method_options())
PRESETS: dict[str, dict[str, Any]] = {
    dataset: {**values, **{k: v for f in method_files() for k, v in f.presets.get(dataset, {}).items()}}
    for dataset, values in _COMMON_PRESETS.items()}
# each method's own recipe (docs/METHOD.md §11.6 and §12.4), for notebook 08's "native" rows: everything
# but the epoch count, which is the study's budget
NATIVE_RECIPES: dict[str, dict[str, Any]] = {f.names[0]: f.native_recipe for f in method_files() if f.native_recipe}


def field_help() -> list[tuple[str, str, str]]:
    """(section, field, help) for every TrainConfig field: ``CommonConfig``'s comments, then each method's
    options under its OPTIONS_TITLE. The ``method`` field's help lists the registered methods."""
    section, out = "run", []
    for line in inspect.getsource(CommonConfig).splitlines():
        header = re.fullmatch(r"    # (.+)", line)
        field = re.fullmatch(r"    (\w+): [^=]+= .+?\s+# (.+)", line)
        if header:
            section = header.group(1)
        elif field:
            out.append((section, field.group(1), field.group(2)))
    names = " | ".join(n for f in method_files() for n in f.names)
    out = [(s, name, names if name == "method" else text) for s, name, text in out]
    return out + [(o.section, o.name, o.help) for o in method_options()]


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
    from adadf_core.ops import adadf_ops as adadf
    from adadf_core.data import cache, classes
    from adadf_core.runtime import device
    from adadf_core.models import networks as model
    from adadf_core.data import transforms
    from adadf_core.methods import method_names
    from adadf_core.methods.adadf import CD_SOURCES, MINING_SUBSETS
    from adadf_core.runtime.distributed import DDP_ATTENTION_BATCH
    from adadf_core.data.gpu_augment import AUGMENT_DEVICES
    return {"profile": PROFILES, "method": method_names(), "dataset": classes.DATASET_NAMES,
            "backbone": model.BACKBONES, "fallback_offdiag": adadf.OFFDIAG_CHOICES,
            "attention_on": model.ATTENTION_ON, "cd_source": CD_SOURCES,
            "mining_subset": MINING_SUBSETS, "rr_low_group": adadf.RR_LOW_GROUPS, "recipe": transforms.RECIPES,
            "amp": device.AMP_CHOICES, "cache": cache.CACHE_MODES, "ddp_attention_batch": DDP_ATTENTION_BATCH,
            "augment_device": AUGMENT_DEVICES}


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
        opt_at_least("curve_test_samples", 1),
        opt_at_least("num_threads", 1),
        opt_at_least("num_workers", 0),
        ("track_samples", isinstance(v["track_samples"], int) and v["track_samples"] >= 0, "an integer >= 0"),
    ] + [(o.name, o.accepts(v[o.name]), o.expected) for o in method_options()]


def make_config(dataset: str = "synthfer", profile: str = "official", **overrides) -> TrainConfig:
    """A config with the data set's preset applied, then ``overrides``. Not yet resolved."""
    names = _choices()["dataset"]
    if dataset not in names:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(names)}{did_you_mean(dataset, names)}")
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
            raise ValueError(f"{name}={values[name]!r} is not valid; expected one of {', '.join(allowed)}"
                             f"{did_you_mean(values[name], allowed)}")
    for name, ok, expected in _ranges(values):
        if not ok:
            raise ValueError(f"{name}={values[name]!r} is not valid; expected {expected}")


def config_differences(a: TrainConfig, b: TrainConfig, ignore=MACHINERY_FIELDS) -> list[str]:
    """``"field: a != b"`` for every field (outside ``ignore``) where the two configs differ."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{k}: {da[k]!r} != {db[k]!r}" for k in da if k not in ignore and da[k] != db[k]]
