"""How a run folder is named: one rule for the CLI's default ``run_dir``, the studies and the notebooks.

    <runs_root>/<method>-seed<seed>                       the data set's preset configuration
    <runs_root>/<method>-<tag><value>-...-seed<seed>      every setting that differs from the preset

``run_dir_for(runs_root, method, seed, **overrides)`` formats the name from the overrides it is given;
``run_dir_for_config(runs_root, cfg)`` computes those overrides as the fields of ``cfg`` that differ from
``make_config(cfg.dataset)`` (machinery such as device, threads or progress bars is ignored). Tags are
short names for the common fields (``NAME_TAGS``: ``t`` threshold, ``ehat`` epoch threshold, ``lmin``
lambda_min, ``noise`` noise rate, ``ep`` epochs, ``ntr``/``nte`` max train/test samples, ``img`` image
size, ...); other fields use their own name. Overrides are sorted by tag, floats are written with ``%g``,
file paths by their stem. Example: ``adadf-lmin0.1-seed0``, ``adadf-noise0.2-seed1``.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from adadf_core.config import MACHINERY_FIELDS, is_resolved, make_config, resolve_config, TrainConfig


# ------------------------------------------------------------------------------------------ naming
NAME_TAGS = {
    "threshold": "t", "epoch_threshold": "ehat", "lambda_min": "lmin", "lambda_max": "lmax",
    "rr_ratio": "rr", "noise_rate": "noise", "noise_seed": "nseed", "noise_file": "nfile",
    "epochs": "ep", "batch_size": "bs", "max_train_samples": "ntr", "max_test_samples": "nte",
    "curve_test_samples": "ncurve",
    "image_size": "img", "recipe": "rcp", "pretrained": "pre", "backbone": "", "profile": "",
    "lr": "lr", "weight_decay": "wd", "lr_gamma": "gamma", "track_samples": "trk",
}
# fields that do not change what a run computes (or are part of the folder name already)
NOT_IN_NAME = set(MACHINERY_FIELDS) | {"dataset", "data_root", "method", "seed"}


def _fmt_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = format(value, "g")
    elif isinstance(value, int):
        text = str(value)
    elif key in ("noise_file", "pretrained", "data_root"):
        text = Path(str(value)).stem
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+]", "_", text)


def run_dir_for(runs_root: str | Path, method: str, seed: int, **overrides) -> Path:
    """The folder of one run: ``<runs_root>/<method>[-<tag><value>...]-seed<seed>``.

    ``overrides`` are the settings that differ from the data set's preset (``None`` values are skipped).
    The name is stable: notebooks and the comparison notebook find each other's runs through it.
    """
    if not method or not re.fullmatch(r"[A-Za-z0-9_]+", method):
        raise ValueError(f"method {method!r} is not a valid run-name part")
    parts = []
    for key, value in overrides.items():
        if value is None:
            continue
        tag = NAME_TAGS.get(key, key)
        parts.append(f"{tag}{_fmt_value(key, value)}")
    name = "-".join([method] + sorted(parts) + [f"seed{int(seed)}"])
    return Path(runs_root) / name


def config_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from its data set's preset (after both are resolved), minus
    machinery fields that do not change the result. The profile counts when it is not ``official``."""
    mine = dataclasses.asdict(cfg if is_resolved(cfg) else resolve_config(cfg))
    base = dataclasses.asdict(resolve_config(make_config(cfg.dataset, cfg.profile, method=cfg.method,
                                                         seed=cfg.seed)))
    out = {k: v for k, v in mine.items() if k not in NOT_IN_NAME and k != "profile" and v != base[k]}
    if cfg.profile != "official":
        out["profile"] = cfg.profile
    return out


def run_dir_for_config(runs_root: str | Path, cfg: TrainConfig) -> Path:
    """``run_dir_for`` with the overrides computed from ``cfg`` (see ``config_overrides``)."""
    return run_dir_for(runs_root, cfg.method, cfg.seed, **config_overrides(cfg))


def default_run_dir(cfg: TrainConfig) -> Path:
    """Where a run goes when ``cfg.run_dir`` is None: ``runs/<dataset>/<name by the rule above>``."""
    return run_dir_for_config(Path("runs") / cfg.dataset, cfg)
