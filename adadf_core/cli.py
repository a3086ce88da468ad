"""The ``adadf`` command: a dispatcher, and the ``train`` and ``evaluate`` sub-commands.

Every entry of ``COMMANDS`` names ``module:function``; the function takes the remaining argv list and
returns an exit code. Modules are imported lazily so that, for example, ``adadf align`` never imports
torch first. The tools with a life of their own (``align``, ``reproduce``, the SynthFER generator and its
backbone) keep their argument parsing beside their code; training and evaluation are here.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from typing import Any, Optional

COMMANDS = {
    "generate-synthfer": ("adadf_core.synthfer:cli_main", "write the embedded SynthFER data set to disk"),
    "pretrain-synthfer": ("adadf_core.pretrain:cli_main", "pretrain the ResNet-18 that SynthFER runs start from (MS-Celeb stand-in)"),
    "train": ("adadf_core.cli:train_main", "train one run (Ada-DF, an ablation variant or a comparison method)"),
    "evaluate": ("adadf_core.cli:evaluate_main", "evaluate a finished or interrupted run folder"),
    "align": ("adadf_core.align:cli_main", "detect and align faces in a folder tree (MTCNN + similarity transform)"),
    "reproduce": ("adadf_core.pipeline:cli_main", "run every notebook with papermill and write results/<dataset>/"),
}


def usage() -> str:
    lines = ["usage: adadf <command> [options]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`adadf <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adadf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


# ------------------------------------------------------------------------------------------ train
# The names shown by `adadf train --help`, spelled out so that help never imports torch; the owners are
# the method registry and datasets.DATASET_NAMES (tests/test_cli.py checks that these lists equal them).
METHOD_HELP = ("baseline", "adadf", "ld_only", "cd_only", "scn", "slm_aea")
DATASET_HELP = ("synthfer", "raf", "affectnet7", "affectnet8", "sfew", "imagefolder")

def _field_types() -> dict[str, Any]:
    from .config import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def parse_value(key: str, text: str):
    """Convert ``text`` to the type of TrainConfig field ``key`` (``none`` for Optional fields)."""
    types = _field_types()
    if key not in types:
        raise ValueError(f"--set {key}={text}: unknown TrainConfig field {key!r}; expected one of "
                         f"{', '.join(sorted(types))}")
    args = typing.get_args(types[key])
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), types[key]) if optional else types[key]
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return base(text) if base in (int, float) else str(text)
    except ValueError:
        name = getattr(base, "__name__", str(base))
        raise ValueError(f"--set {key}={text}: expected a value of type {name}"
                         f"{' or none' if optional else ''}") from None


def build_train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adadf train", description="Train one run (writes a run folder).")
    p.add_argument("--dataset", default="synthfer", help=" | ".join(DATASET_HELP))
    p.add_argument("--data-root", default=None, help="data set root (synthfer: default generated copy)")
    p.add_argument("--profile", default="official", help="official (authors' code) | paper (the text)")
    p.add_argument("--method", default="adadf", help=" | ".join(METHOD_HELP))
    p.add_argument("--pretrained", default=None, help="local backbone weights file (default: from scratch)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<dataset>/<run name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from checkpoint.pt")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read --pretrained / checkpoint files with full unpickling, which runs code stored in "
                        "them: only for files you trust (default: a code-free read that refuses such files)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any TrainConfig field, e.g. --set batch_size=32 --set cd_source=train_pass")
    return p


def config_from_args(args):
    """The resolved config of ``adadf train``'s arguments (the one place the CLI resolves it)."""
    from .config import make_config, resolve_config
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set {item}: expected KEY=VALUE")
        key, text = item.split("=", 1)
        overrides[key.strip()] = parse_value(key.strip(), text)
    for key, value in (("data_root", args.data_root), ("pretrained", args.pretrained),
                       ("epochs", args.epochs), ("seed", args.seed), ("run_dir", args.run_dir)):
        if value is not None:
            overrides[key] = value
    if args.resume:
        overrides["resume"] = True
    if args.trust_pickle:
        overrides["trust_pickle"] = True
    overrides["method"] = args.method
    return resolve_config(make_config(args.dataset, args.profile, **overrides))


def format_summary(run) -> str:
    s = run.summary
    lines = [f"run: {run.path}",
             f"best test accuracy over epochs (as the paper reports): {s.get('best_acc', float('nan')):.4f} "
             f"(epoch {s.get('best_epoch')})",
             f"last-epoch test accuracy: {s.get('last_acc', float('nan')):.4f} (epoch {s.get('last_epoch')})"]
    names, accs = s.get("class_names") or [], s.get("per_class_acc_last") or []
    if names and accs:
        lines.append("per-class accuracy (last): " + ", ".join(f"{n} {a:.3f}" for n, a in zip(names, accs)))
    if not s.get("finished"):
        lines.append("(unfinished: continue with --resume)")
    return "\n".join(lines)


def train_main(argv: Optional[list[str]] = None) -> int:
    args = build_train_parser().parse_args(argv)
    from .checkpoints import CheckpointError
    from .fileio import DamagedFileError
    from .runs import DiskFullError, RunExistsError
    from .train import NonFiniteLossError, TrainingInterrupted, fit
    try:
        run = fit(config_from_args(args))
    except TrainingInterrupted as stop:
        print(f"adadf train: {stop}", file=sys.stderr)
        return 130
    except (ValueError, RunExistsError, FileNotFoundError, NonFiniteLossError, CheckpointError,
            DamagedFileError, DiskFullError) as error:
        print(f"adadf train: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(run))
    return 0


# --------------------------------------------------------------------------------------- evaluate
def evaluate_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="adadf evaluate",
                                description="Re-evaluate a run folder's saved model on the test split.")
    p.add_argument("run_dir")
    p.add_argument("--best", action="store_true", help="the best-epoch weights (default: last epoch)")
    p.add_argument("--data-root", default=None, help="data set root if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read a legacy weights file with full unpickling (runs code stored in it: trusted files only)")
    args = p.parse_args(argv)
    from . import device as devmod
    from .checkpoints import CheckpointError
    from .fileio import DamagedFileError
    from .evaluate import evaluate, format_report
    from .loaders import load_splits, make_test_loader
    from .methods import get_method
    from .runs import Run
    try:
        run = Run(args.run_dir)
        cfg = run.config
        if args.data_root is not None:
            cfg = dataclasses.replace(cfg, data_root=args.data_root)
        device = devmod.select_device(args.device)
        test_set = load_splits(cfg, with_train=False)["test"]
        model = run.load_model(best=args.best, device=device, trust_pickle=args.trust_pickle)
        loader = make_test_loader(cfg, test_set, get_method(cfg.method).test_batch_size(cfg), device)
        amp = cfg.amp if device.type == "cuda" else "off"
        result = evaluate(model, loader, device=device, amp=amp, num_classes=test_set.num_classes)
    except (ValueError, FileNotFoundError, CheckpointError, DamagedFileError) as error:
        print(f"adadf evaluate: error: {error}", file=sys.stderr)
        return 2
    which = "best epoch" if args.best else "last epoch"
    print(f"run: {run.path} ({cfg.method}, {cfg.dataset}, {which} weights)")
    print(format_report(result, list(test_set.class_names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
