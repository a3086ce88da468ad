"""The training loop: ``fit(cfg) -> Run`` is the one entry point for the CLI and the notebooks.

One run = one folder (layout in docs/ARCHITECTURE.md). After every epoch the folder holds everything
up to that epoch, written atomically (temporary file, then ``os.replace``), so an interrupted run can
be continued with ``resume=True`` and reaches the same numbers as an uninterrupted one (bit-identical
on CPU with ``num_workers=0``: the checkpoint carries the python / numpy / torch / CUDA RNG states and
the loader's generator). The per-epoch records (metrics rows, D, attention statistics, tracked
samples, best epoch) travel inside the checkpoint too, so the files are rewritten whole from them.

A finished run is never overwritten: ``reuse=True`` returns it (when its config matches), otherwise
``RunExistsError``. The method-specific parts (loss, per-sample state, per-epoch records) live in a
``Method`` (``methods.py``).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import sys
import time
import typing
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import device as devmod
from .config import MACHINERY_FIELDS, TrainConfig, make_config, resolve_config
from .evaluate import evaluate
from .methods import get_method
from .fileio import atomic_write, write_json, write_text
from .runs import Run, is_finished

BASE_COLUMNS = ["epoch", "lr", "w_ce", "w_kl", "loss", "loss_ce", "loss_kl", "loss_rr", "train_acc",
                "test_acc", "seconds"]


class RunExistsError(FileExistsError):
    """The run folder already holds a finished run, or an unfinished one and resume was not asked."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------------- small helpers
def _save_npy(path: Path, array) -> None:
    def write(p):
        with open(p, "wb") as fh:
            np.save(fh, np.asarray(array))
    atomic_write(path, write)


def _save_npz(path: Path, arrays: dict) -> None:
    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, write)


def _torch_save(path: Path, obj) -> None:
    atomic_write(path, lambda p: torch.save(obj, p))


def config_differences(a: TrainConfig, b: TrainConfig, ignore=MACHINERY_FIELDS) -> list[str]:
    """``"field: a != b"`` for every field (outside ``ignore``) where the two configs differ."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{k}: {da[k]!r} != {db[k]!r}" for k in da if k not in ignore and da[k] != db[k]]


def load_model_state(model: torch.nn.Module, state: dict, source) -> None:
    """``model.load_state_dict(state)`` with an error naming the file and what does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()
        detail = " ".join(line.strip() for line in first[:6])
        raise ValueError(f"checkpoint {source} does not fit the model "
                         f"({type(model).__name__}): {detail}") from None


# ------------------------------------------------------------------------------------- data
def resolve_data_root(cfg: TrainConfig) -> Optional[str]:
    """``cfg.data_root``, or the default generated SynthFER copy for ``dataset=synthfer``."""
    if cfg.data_root is None and cfg.dataset == "synthfer":
        from . import synthfer
        return str(synthfer.ensure())
    if cfg.data_root is None:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_root (CLI: --data-root PATH)")
    return cfg.data_root


def load_splits(cfg: TrainConfig, with_train: bool = True, with_train_eval: bool = False) -> dict:
    """The data sets of a run: ``train`` (recipe transform, noise), ``test`` and optionally
    ``train_eval`` (the training split with the test transform, for tracked samples)."""
    from .datasets import load_split
    root = resolve_data_root(cfg)
    common = dict(image_size=cfg.image_size, recipe=cfg.recipe, cache=cfg.cache, progress=cfg.progress)
    out = {"test": load_split(cfg.dataset, root, "test", max_samples=cfg.max_test_samples, **common)}
    if with_train:
        noise = dict(noise_rate=cfg.noise_rate, noise_seed=cfg.noise_seed, noise_file=cfg.noise_file)
        out["train"] = load_split(cfg.dataset, root, "train", max_samples=cfg.max_train_samples,
                                  **noise, **common)
        if with_train_eval:
            # recipe "none" on the training split = the test transform (resize, tensor, normalise)
            out["train_eval"] = load_split(cfg.dataset, root, "train", max_samples=cfg.max_train_samples,
                                           **noise, **dict(common, recipe="none", cache="none"))
    return out


def make_test_loader(cfg: TrainConfig, test_set, method, device) -> torch.utils.data.DataLoader:
    batch = getattr(method, "eval_batch_size", None) or cfg.batch_size
    return torch.utils.data.DataLoader(test_set, batch_size=batch, shuffle=False,
                                       num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                       persistent_workers=cfg.num_workers > 0,
                                       generator=torch.Generator().manual_seed(cfg.seed))


def make_train_loader(cfg: TrainConfig, train_set, device):
    from .datasets import make_train_sampler
    sampler = make_train_sampler(train_set, cfg.dataset, cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"the training split has {len(train_set)} samples (after sampling), fewer than "
                         f"batch_size={cfg.batch_size}: with drop_last there is not one full batch")
    return loader, sampler, generator


# --------------------------------------------------------------------------------- run folder
def _check_run_dir(cfg: TrainConfig, run_dir: Path) -> tuple[str, Optional[Run]]:
    """Decide what to do with ``run_dir``: ("fresh" | "resume" | "done", Run or None)."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "fresh", None
    checkpoint = run_dir / "checkpoint.pt"
    if not (run_dir / "config.json").is_file():
        raise RunExistsError(f"{run_dir} is not empty and is not a run folder (no config.json); "
                             "refusing to write into it: choose another run_dir")
    finished = is_finished(run_dir)
    if finished:
        if not (cfg.reuse or cfg.resume):
            raise RunExistsError(f"{run_dir} already holds a finished run; pass reuse=True "
                                 "(CLI: --set reuse=true) to load it, or choose another run_dir")
        run = Run(run_dir)
        diff = config_differences(run.config, cfg)
        if diff:
            raise RunExistsError(f"{run_dir} holds a finished run with a different config "
                                 f"({'; '.join(diff)}); choose another run_dir")
        return "done", run
    if checkpoint.is_file():
        if not cfg.resume:
            raise RunExistsError(f"{run_dir} holds an unfinished run (checkpoint.pt); pass resume=True "
                                 "(CLI: --resume) to continue it, or delete the folder")
        return "resume", None
    return "fresh", None   # a run that died before its first checkpoint: start over


def _environment(device, model, train_set) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
           "weights": getattr(model, "pretrained_source", None) or "scratch",
           "num_classes": int(train_set.num_classes), "class_names": list(train_set.class_names),
           "num_train": len(train_set), "num_threads": torch.get_num_threads()}
    try:
        import torchvision
        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return env


def _metrics_frame(rows: list[dict]):
    import pandas as pd
    columns: list[str] = list(BASE_COLUMNS)
    seen = [k for row in rows for k in row]
    columns += [k for k in dict.fromkeys(seen) if k.startswith("acc_") and k not in columns]
    columns += [k for k in dict.fromkeys(seen) if k not in columns]
    return pd.DataFrame(rows, columns=columns)


def _write_records(run_dir: Path, history: dict, tracked_info: Optional[dict]) -> None:
    """Rewrite metrics.csv and the per-epoch record files from ``history``."""
    frame = _metrics_frame(history["metrics"])
    write_text(run_dir / "metrics.csv", frame.to_csv(index=False))
    if history["class_distributions"]:
        _save_npy(run_dir / "class_distributions.npy",
                  np.stack(history["class_distributions"]).astype(np.float32))
    if history["attention_rows"]:
        import pandas as pd
        write_text(run_dir / "attention_by_class.csv",
                    pd.DataFrame(history["attention_rows"]).to_csv(index=False))
    if tracked_info is not None and history["tracked"]:
        arrays = dict(tracked_info)
        for key in history["tracked"][0]:
            arrays[key] = np.stack([rec[key] for rec in history["tracked"]])
        _save_npz(run_dir / "tracked.npz", arrays)


def _summary(cfg, history, class_names, finished) -> dict:
    last = history["metrics"][-1] if history["metrics"] else {}
    best = history["best"]
    return {"finished": bool(finished),
            "best_acc": best.get("acc"), "best_epoch": best.get("epoch"),
            "best_acc_note": "best test accuracy over epochs, as the paper reports",
            "last_acc": last.get("test_acc"), "last_epoch": last.get("epoch"),
            "per_class_acc_last": history.get("per_class_last"),
            "per_class_acc_best": best.get("per_class"),
            "class_names": list(class_names), "method": cfg.method, "dataset": cfg.dataset,
            "profile": cfg.profile, "epochs": cfg.epochs, "seconds": history["seconds"]}


# ------------------------------------------------------------------------------------------ fit
def fit(cfg: TrainConfig, stop_after_epoch: Optional[int] = None) -> Run:
    """Train one run and return it. ``stop_after_epoch`` ends early (the run stays unfinished and can
    be continued with ``resume=True``)."""
    cfg = resolve_config(cfg)
    run_dir = Path(cfg.run_dir)
    action, existing = _check_run_dir(cfg, run_dir)
    if action == "done":
        return existing

    device = devmod.select_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    devmod.seed_everything(cfg.seed, deterministic=device.type == "cpu")
    amp = cfg.amp if device.type == "cuda" else "off"
    channels_last = devmod.use_channels_last(device, cfg)

    # data, method, model, optimiser
    method_cls = get_method(cfg.method)
    data = load_splits(cfg, with_train=True,
                       with_train_eval=cfg.track_samples > 0 and method_cls.needs_train_eval_set)
    train_set, test_set = data["train"], data["test"]
    method = method_cls(cfg, train_set.num_classes, train_set, device)
    method.amp_context = functools.partial(devmod.autocast_context, device, amp)
    method.channels_last = channels_last
    method.train_eval_set = data.get("train_eval")
    model = method.build_model(pretrained=action != "resume")
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    train_loader, sampler, generator = make_train_loader(cfg, train_set, device)
    test_loader = make_test_loader(cfg, test_set, method, device)
    steps = len(train_loader)
    optimizer = torch.optim.Adam(method.param_groups(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, interval = method.make_scheduler(optimizer, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=devmod.needs_grad_scaler(device, amp))
    class_names = list(train_set.class_names)

    history = {"metrics": [], "class_distributions": [], "attention_rows": [], "tracked": [],
               "best": {}, "per_class_last": None, "seconds": 0.0}
    start_epoch = 1
    run_dir.mkdir(parents=True, exist_ok=True)
    if action == "resume":
        ckpt_path = run_dir / "checkpoint.pt"
        # on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        diff = config_differences(TrainConfig.from_dict(ckpt["config"]), cfg)
        if diff:
            raise ValueError(f"cannot resume {run_dir}: its config differs from this one ({'; '.join(diff)})")
        load_model_state(model, ckpt["model"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        method.load_state_dict(ckpt["method"])
        history = ckpt["history"]
        generator.set_state(ckpt["loader_generator"])
        devmod.set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
    else:
        for name in ("metrics.csv", "class_distributions.npy", "attention_by_class.csv", "tracked.npz",
                     "summary.json", "best_model.pt", "confusion.npy", "confusion_best.npy", "features.npz"):
            (run_dir / name).unlink(missing_ok=True)
        initial = method.initial_record()
        if "class_distribution" in initial:
            history["class_distributions"].append(initial["class_distribution"])
    env = _environment(device, model, train_set)
    if action == "resume":   # the model was rebuilt without the pretrained file: keep the record
        old = json.loads((run_dir / "config.json").read_text()).get("environment", {})
        env["weights"] = old.get("weights", cfg.pretrained or "scratch")
    write_json(run_dir / "config.json", {"config": dataclasses.asdict(cfg), "environment": env})
    tracked_info = method.tracked_info()

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.time()
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        row = _train_epoch(cfg, method, model, optimizer, scheduler, interval, scaler, train_loader,
                           epoch, steps, run_dir)
        row.update(method.on_epoch_end(model, epoch, train_loader) or {})
        record = method.epoch_record(epoch) or {}
        if interval == "epoch":
            scheduler.step()
        ev = evaluate(model, test_loader, method=method, device=device, amp=amp,
                      channels_last=channels_last, num_classes=len(class_names))
        row["test_acc"] = ev["acc"]
        row.update({f"acc_{name}": float(a) for name, a in zip(class_names, ev["per_class_acc"])})
        row["seconds"] = time.time() - t0
        history["seconds"] += row["seconds"]
        history["metrics"].append(row)
        if cfg.progress:
            from tqdm.auto import tqdm
            tqdm.write(f"epoch {epoch}/{cfg.epochs}: loss {row.get('loss', float('nan')):.4f}  "
                       f"train_acc {row.get('train_acc', float('nan')):.4f}  test_acc {ev['acc']:.4f}  "
                       f"({row['seconds']:.1f}s)")
        history["per_class_last"] = [float(a) for a in ev["per_class_acc"]]
        if "class_distribution" in record:
            history["class_distributions"].append(record["class_distribution"])
        history["attention_rows"] += record.get("attention_by_class", [])
        if "tracked" in record:
            history["tracked"].append(record["tracked"])

        # files of this epoch
        _save_npy(run_dir / "confusion.npy", ev["confusion"])
        if not history["best"] or ev["acc"] > history["best"]["acc"]:
            history["best"] = {"acc": ev["acc"], "epoch": epoch,
                               "per_class": [float(a) for a in ev["per_class_acc"]]}
            _torch_save(run_dir / "best_model.pt", {"model": model.state_dict(), "epoch": epoch,
                                                    "acc": ev["acc"]})
            _save_npy(run_dir / "confusion_best.npy", ev["confusion"])
        finished = epoch == cfg.epochs
        if finished:
            _save_npz(run_dir / "features.npz", {"features": ev["features"], "labels": ev["labels"],
                                                 "preds": ev["preds"]})
        _write_records(run_dir, history, tracked_info)
        _torch_save(run_dir / "checkpoint.pt", {
            "epoch": epoch, "config": dataclasses.asdict(cfg), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "method": method.state_dict(), "history": history,
            "loader_generator": generator.get_state(), "rng": devmod.rng_state()})
        write_json(run_dir / "summary.json", _summary(cfg, history, class_names, finished))
        if stop_after_epoch is not None and epoch >= stop_after_epoch and not finished:
            break
    if start_epoch > cfg.epochs:  # resumed a run whose last epoch was done but not marked finished
        write_json(run_dir / "summary.json", _summary(cfg, history, class_names, True))
    return Run(run_dir)


def _train_epoch(cfg, method, model, optimizer, scheduler, interval, scaler, loader, epoch, steps,
                 run_dir) -> dict:
    """One pass of training steps; returns the epoch's averaged logs."""
    model.train()
    method.on_epoch_start(epoch)
    lr = optimizer.param_groups[0]["lr"]
    sums: dict[str, Any] = {}
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)
    try:
        for step, (images, labels, indices) in enumerate(loader):
            images = method.to_device(images)
            labels = labels.to(method.device, non_blocking=True).long()
            indices = indices.to(method.device, non_blocking=True).long()
            method.step_ctx = {}
            with method.amp_context():
                loss, logs = method.training_step(model, images, labels, indices, epoch, step, steps)
            if not bool(torch.isfinite(loss.detach())):
                raise NonFiniteLossError(
                    f"non-finite loss ({float(loss.detach()):g}) at epoch {epoch}, step {step + 1}/{steps} of "
                    f"{run_dir}; stopped. The run folder keeps the last good checkpoint "
                    f"(epoch {epoch - 1}); lower lr or check the data and pretrained weights")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            method.after_optimizer_step(model, method.step_ctx)
            if interval == "step":
                scheduler.step()
            for key, value in logs.items():
                value = value.detach().double() if torch.is_tensor(value) else float(value)
                sums[key] = sums.get(key, 0.0) + value
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == steps - 1:
                    bar.set_postfix({k: f"{float(v) / (step + 1):.3f}" for k, v in sums.items()
                                     if k.startswith("loss") or k == "train_acc"}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    row = {"epoch": epoch, "lr": lr}
    row.update({k: float(v) / steps for k, v in sums.items()})
    return row


# ------------------------------------------------------------------------------------------- CLI
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def parse_value(key: str, text: str):
    """Convert ``text`` to the type of TrainConfig field ``key`` (``none`` for Optional fields)."""
    types = _field_types()
    if key not in types:
        raise ValueError(f"--set {key}={text}: unknown TrainConfig field {key!r}; expected one of "
                         f"{', '.join(sorted(types))}")
    tp = types[key]
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
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
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        return str(text)
    except ValueError:
        name = getattr(base, "__name__", str(base))
        raise ValueError(f"--set {key}={text}: expected a value of type {name}"
                         f"{' or none' if optional else ''}") from None


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adadf train", description="Train one run (writes a run folder).")
    p.add_argument("--dataset", default="synthfer",
                   help="synthfer | raf | affectnet7 | affectnet8 | sfew | imagefolder")
    p.add_argument("--data-root", default=None, help="data set root (synthfer: default generated copy)")
    p.add_argument("--profile", default="official", help="official (authors' code) | paper (the text)")
    p.add_argument("--method", default="adadf", help="adadf | baseline | ld_only | cd_only | scn | slm_aea")
    p.add_argument("--pretrained", default=None, help="local backbone weights file (default: from scratch)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<dataset>/<method>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from checkpoint.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any TrainConfig field, e.g. --set batch_size=32 --set cd_source=train_pass")
    return p


def config_from_args(args) -> TrainConfig:
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
    overrides["method"] = args.method
    return make_config(args.dataset, args.profile, **overrides)


def format_summary(run: Run) -> str:
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


def cli_main(argv: Optional[list[str]] = None) -> int:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        run = fit(cfg)
    except (ValueError, RunExistsError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"adadf train: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(run))
    return 0
