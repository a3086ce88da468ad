"""The ``adadf`` command: a dispatcher, and the ``train`` and ``evaluate`` sub-commands.

Every entry of ``COMMANDS`` names ``module:function``; the function takes the remaining argv list and
returns an exit code. Modules are imported lazily so that, for example, ``adadf align`` never imports
torch first. The tools with a life of their own (``align``, ``reproduce``, the SynthFER generator and its
backbone) keep their argument parsing beside their code; training and evaluation are here.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import sys
import typing
from pathlib import Path
from typing import Any, Optional

import numpy as np

from adadf_core.utils.suggest import did_you_mean

COMMANDS = {
    "generate-synthfer": ("adadf_core.data.synthfer:cli_main", "write the embedded SynthFER data set to disk"),
    "pretrain-synthfer": ("adadf_core.studies.pretrain:cli_main", "pretrain the ResNet-18 that SynthFER runs start from (MS-Celeb stand-in)"),
    "train": ("adadf_core.cli:train_main", "train one run (Ada-DF, an ablation variant or a comparison method)"),
    "evaluate": ("adadf_core.cli:evaluate_main", "evaluate a finished or interrupted run folder"),
    "predict": ("adadf_core.cli:predict_main", "class probabilities for your own images with a trained run"),
    "export": ("adadf_core.cli:export_main", "write a run's inference branch as ONNX or TorchScript, with metadata"),
    "align": ("adadf_core.data.align:cli_main", "detect and align faces in a folder tree (MTCNN + similarity transform)"),
    "check-data": ("adadf_core.data.checkdata:cli_main", "compare a data set copy with the official counts; manifest and content hash"),
    "reproduce": ("adadf_core.pipeline.reproduce:cli_main", "run every notebook with papermill and write results/<dataset>/"),
}


def usage() -> str:
    lines = ["usage: adadf <command> [options]      (adadf --version: the version)", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`adadf <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        # here, not at the top: `adadf --help` and `adadf train --help` start without torch
        from adadf_core import __version__
        print(f"adadf {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adadf: unknown command {name!r}{did_you_mean(name, COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


# ------------------------------------------------------------------------------------------ train
# the authors' train.py flags -> our TrainConfig fields (docs/AUTHORS_CODE.md)
AUTHOR_ALIASES = {"beta": "epoch_threshold", "min_weight": "lambda_min", "max_weight": "lambda_max",
                  "margin_1": "rr_margin", "tops": "rr_ratio", "gamma": "lr_gamma", "data_path": "data_root",
                  "num_workers": "num_workers", "threshold": "threshold"}


def config_fields() -> list[tuple[str, str, str]]:
    """(section, field, help) for every TrainConfig field (``config.field_help``)."""
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.config import field_help
    return field_help()


def _field_types() -> dict[str, Any]:
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.config import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def parse_value(key: str, text: str):
    """Convert ``text`` to the type of TrainConfig field ``key`` (``none`` for Optional fields)."""
    types = _field_types()
    if key not in types:
        hint = did_you_mean(key, types) or f"; expected one of {', '.join(sorted(types))}"
        raise ValueError(f"--set {key}={text}: unknown TrainConfig field {key!r}{hint}")
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


class _Parser(argparse.ArgumentParser):
    """argparse that answers an unknown option with the closest known ones ("did you mean"), in one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (adadf train --help lists every option)\n")

    def parse_args(self, args=None, namespace=None):
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            known = [o for a in self._actions for o in a.option_strings]
            unknown = extra[0].split("=", 1)[0]
            close = difflib.get_close_matches(unknown, known, n=3, cutoff=0.6) if unknown.startswith("-") else []
            hint = f"; did you mean {' or '.join(close)}?" if close else "; see adadf train --help"
            self.error(f"unknown option {unknown}{hint}" if unknown.startswith("-") else
                       f"unexpected argument {unknown!r}{hint}")
        return parsed


def _flags(name: str) -> list[str]:
    """``--field-name``, ``--field_name`` and the authors' names (with dashes too) of one field."""
    names = [name] + [a for a, target in AUTHOR_ALIASES.items() if target == name]
    flags = [f"--{n}" for v in names for n in (v.replace("_", "-"), v)]
    return list(dict.fromkeys(flags))


def _typed(name: str):
    def parse(text: str):
        try:
            return parse_value(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).replace("--set ", "")) from None
    parse.__name__ = name
    return parse


def build_train_parser() -> argparse.ArgumentParser:
    """Every TrainConfig field as a flag (``--field-name``, ``--field_name`` and the authors' name), grouped as
    in config.py, with the field's comment as help. Only flags given on the command line are set."""
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.config import PRESETS, TrainConfig
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    presets = {name: "; ".join(f"{d}: {v}" for d, values in PRESETS.items() for k, v in values.items()
                               if k == name and v != defaults[name]) for name in defaults}
    types = _field_types()
    p = _Parser(prog="adadf train", argument_default=argparse.SUPPRESS, allow_abbrev=False,
                usage="adadf train [--dataset NAME] [--data-root PATH] [--method NAME] [--FIELD VALUE ...]",
                description="Train one run (writes a run folder). Flags not given take the data set's preset, "
                            "then TrainConfig's default.",
                epilog="The authors' flag names work too: " + ", ".join(
                    f"--{a} = --{t.replace('_', '-')}" for a, t in AUTHOR_ALIASES.items() if a != t) + ".")
    groups: dict[str, Any] = {}
    for section, name, help_ in config_fields():
        group = groups.setdefault(section, p.add_argument_group(section))
        preset = f"; data-set presets: {presets[name]}" if presets[name] else ""
        text = f"{help_} [default: {defaults[name]}{preset}]".replace("%", "%%")
        if types[name] in (bool, Optional[bool]):
            group.add_argument(*_flags(name), dest=name, action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(*_flags(name), dest=name, metavar=name.upper(), help=text, type=_typed(name))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any TrainConfig field, e.g. --set batch_size=32 --set cd_source=train_pass")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train this one run on N processes with torchrun and DistributedDataParallel (N GPUs, "
                        "or N CPU processes with gloo) [default: 1]")
    return p


def config_args(cfg) -> list[str]:
    """``adadf train`` options that rebuild ``cfg``: its data set and profile, then ``--set name=value`` for
    every field that differs from a fresh config of that data set and profile (a notebook's config handed to
    ``launch``). The run folder, ``resume`` and ``reuse`` are left to the caller's own options."""
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.config import make_config

    fresh = make_config(cfg.dataset, cfg.profile)
    args = ["--dataset", cfg.dataset, "--profile", cfg.profile]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("dataset", "profile", "run_dir", "resume", "reuse") or value == getattr(fresh, f.name):
            continue
        text = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--set", f"{f.name}={text}"]
    return args


def config_from_args(args):
    """The resolved config of ``adadf train``'s arguments (the one place the CLI resolves it)."""
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.config import make_config, resolve_config
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("overrides", "nproc")}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set {item}: expected KEY=VALUE")
        key, text = item.split("=", 1)
        overrides[key.strip()] = parse_value(key.strip(), text)
    dataset, profile = overrides.pop("dataset", "synthfer"), overrides.pop("profile", "official")
    return resolve_config(make_config(dataset, profile, **overrides))


def train_weights(cfg):
    """The starting weights of ``adadf train``, settled before any data loads: ``synthfer-backbone`` (the
    pipeline's name) becomes the SynthFER-pretrained ResNet-18's file (pretrained once, as ``make reproduce``
    does), a weights file that does not exist is refused, and a SynthFER run from scratch says in one line
    that the pipeline's runs do not start there."""
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.pipeline.budgets import SYNTHFER_BACKBONE
    from adadf_core.pipeline.notebook import display_path
    from adadf_core.studies import pretrain
    if cfg.pretrained == SYNTHFER_BACKBONE:
        if not pretrain.default_path().is_file():
            print(f"adadf train: pretraining the SynthFER backbone once ({display_path(pretrain.default_path())})",
                  file=sys.stderr)
        path = pretrain.synthfer_backbone(device=cfg.device, progress=cfg.progress)
        return dataclasses.replace(cfg, pretrained=display_path(path))
    if cfg.pretrained is not None and not Path(cfg.pretrained).is_file():
        raise FileNotFoundError(f"--pretrained {cfg.pretrained}: no such file; expected a local weights file or "
                                f"{SYNTHFER_BACKBONE} (the backbone make reproduce starts SynthFER runs from)")
    if cfg.pretrained is None and cfg.dataset == "synthfer":
        print(f"adadf train: note: training from scratch; make reproduce starts every SynthFER run from "
              f"--pretrained {SYNTHFER_BACKBONE}")
    return cfg


def settings_line(cfg) -> str:
    """What ``adadf train`` is about to run, in one line (the data set's preset applied)."""
    return (f"adadf train: {cfg.method} on {cfg.dataset}, {cfg.epochs} epochs, batch {cfg.batch_size}, "
            f"{cfg.image_size} px, recipe {cfg.recipe}, t {cfg.threshold}, ê {cfg.epoch_threshold}, seed {cfg.seed}, "
            f"weights {cfg.pretrained or 'from scratch'}, profile {cfg.profile}")


def format_summary(run) -> str:
    s = run.summary
    lines = [f"run: {run.path}",
             f"best test accuracy over epochs (selected on the test set, as the paper reports): "
             f"{s.get('best_acc', float('nan')):.4f} (epoch {s.get('best_epoch')})",
             f"last-epoch test accuracy: {s.get('last_acc', float('nan')):.4f} (epoch {s.get('last_epoch')})"]
    if len(run.metrics):
        # here, not at the top: `adadf --help` and `adadf train --help` start without torch
        from adadf_core.studies.protocol import run_card_text
        lines.append(run_card_text(run))
    names, accs = s.get("class_names") or [], s.get("per_class_acc_last") or []
    if names and accs:
        lines.append("per-class accuracy (last): " + ", ".join(f"{n} {a:.3f}" for n, a in zip(names, accs)))
    if not s.get("finished"):
        lines.append("(unfinished: continue with --resume)")
    return "\n".join(lines)


def train_main(argv: Optional[list[str]] = None) -> int:
    """``adadf train`` (also each process of ``torchrun -m adadf_core train``: rank 0 prints the summary)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_train_parser().parse_args(argv)
    from adadf_core.runtime import distributed                  # (after parsing: --help stays free of torch)
    if getattr(args, "nproc", 1) > 1:           # torchrun runs this command again in N processes
        return distributed.launch(args.nproc, _without_nproc(argv)).returncode
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.utils.checkpoints import CheckpointError
    from adadf_core.utils.fileio import DamagedFileError
    from adadf_core.runs.writer import DiskFullError
    from adadf_core.runs.lock import RunExistsError
    from adadf_core.engine.train import NonFiniteLossError, TrainingInterrupted, fit
    try:
        cfg = train_weights(config_from_args(args))
        if distributed.env_rank() == 0:
            print(settings_line(cfg), flush=True)
        run = fit(cfg)
        distributed.shutdown()
    except TrainingInterrupted as stop:
        print(f"adadf train: {stop}", file=sys.stderr)
        return 130
    except (ValueError, RunExistsError, FileNotFoundError, NonFiniteLossError, CheckpointError,
            DamagedFileError, DiskFullError) as error:
        print(f"adadf train: error: {error}", file=sys.stderr)
        return 2
    if distributed.env_rank() == 0:
        print(format_summary(run))
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


# --------------------------------------------------------------------------------------- evaluate
def evaluate_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="adadf evaluate",
                                description="Re-evaluate a run folder's saved model on the test split.")
    p.add_argument("run_dir", help="a run folder written by adadf train")
    p.add_argument("--best", action="store_true", help="the best-epoch weights (default: last epoch)")
    p.add_argument("--data-root", default=None, help="data set root if it moved since training")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read a legacy weights file with full unpickling (runs code stored in it: trusted files only)")
    args = p.parse_args(argv)
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.runtime import device as devmod
    from adadf_core.utils.checkpoints import CheckpointError
    from adadf_core.utils.fileio import DamagedFileError
    from adadf_core.engine.evaluate import evaluate, format_report
    from adadf_core.engine.loaders import load_splits, make_test_loader
    from adadf_core.methods import get_method
    from adadf_core.runs.reader import Run
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
        result = evaluate(model, loader, device=device, amp=amp, num_classes=test_set.num_classes,
                          channels_last=devmod.use_channels_last(device, cfg))     # the layout training evaluated in
    except (ValueError, FileNotFoundError, CheckpointError, DamagedFileError) as error:
        print(f"adadf evaluate: error: {error}", file=sys.stderr)
        return 2
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.studies.protocol import run_card_text
    which = "best-epoch (selected on the test set)" if args.best else "last-epoch"
    print(f"run: {run.path} ({cfg.method}, {cfg.dataset}, {which} weights)")
    print(format_report(result, list(test_set.class_names)))
    print(run_card_text(run))
    return 0


# ---------------------------------------------------------------------------------------- predict
def predict_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="adadf predict",
                                description="Class probabilities for images, with a run's own test-time "
                                            "preprocessing (image size, normalisation, SFEW TenCrop).")
    p.add_argument("model", help="a run folder, or a weights file in one (best_model.pt / checkpoint.pt)")
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--align", action="store_true", help="raw photographs: detect and align the face first "
                   "(MTCNN + five-point template, as for training); faces not found are listed, not fatal")
    p.add_argument("--best", action="store_true", help="the best-epoch weights (default: last epoch)")
    p.add_argument("--csv", default=None, metavar="OUT", help="write one row per image with every class's probability")
    p.add_argument("--top-k", type=int, default=3, help="classes printed per image (default 3)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--trust-pickle", action="store_true", help="read a legacy weights file with full unpickling")
    args = p.parse_args(argv)
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.utils.checkpoints import CheckpointError
    from adadf_core.inference.predict import align_photos, image_files, load_predictor, read_images, write_csv
    try:
        predictor = load_predictor(args.model, best=args.best, device=args.device, trust_pickle=args.trust_pickle)
        files = image_files(args.paths)
        if not files:
            raise FileNotFoundError(f"no image files in {', '.join(args.paths)}")
        inputs, status = align_photos(files) if args.align else read_images(files)
        ok = [i for i, x in enumerate(inputs) if x is not None]
        probs = np.full((len(files), len(predictor.class_names)), np.nan, dtype=np.float32)
        if ok:
            probs[ok] = predictor([inputs[i] for i in ok])
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError) as error:
        print(f"adadf predict: error: {error}", file=sys.stderr)
        return 2
    print(f"model: {predictor.source}" + (f"\nnote: {predictor.note}" if predictor.note else ""))
    names = predictor.class_names
    for k, path in enumerate(files):
        if status[k]:
            print(f"{path}: {status[k]}")
            continue
        top = np.argsort(-probs[k])[: max(1, args.top_k)]
        print(f"{path}: " + ", ".join(f"{names[j]} {probs[k, j]:.3f}" for j in top))
    if args.csv:
        write_csv(args.csv, [str(f) for f in files], probs, names, status)
        print(f"wrote {args.csv}")
    missed = sum(bool(s) for s in status)
    if missed:
        print(f"{missed} of {len(files)} image(s) could not be classified: listed above", file=sys.stderr)
    return 0 if missed < len(files) else 1      # non-zero only when nothing could be classified


# ----------------------------------------------------------------------------------------- export
def export_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="adadf export", description="Write a run's target (inference) branch as "
                                "ONNX or TorchScript, with class names and preprocessing in the file's metadata.")
    p.add_argument("run_dir", help="a run folder")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="onnx (default) or torchscript")
    p.add_argument("--best", action="store_true", help="the best-epoch weights (default: last epoch)")
    p.add_argument("--out", default=None, help="output file (default <run_dir>/model_<last|best>.<onnx|pt>)")
    p.add_argument("--trust-pickle", action="store_true", help="read a legacy weights file with full unpickling")
    args = p.parse_args(argv)
    # here, not at the top: `adadf --help` and `adadf train --help` start without torch
    from adadf_core.utils.checkpoints import CheckpointError
    from adadf_core.inference.export import export_model
    try:
        out = export_model(args.run_dir, args.format, args.out, best=args.best, trust_pickle=args.trust_pickle)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as error:
        print(f"adadf export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
