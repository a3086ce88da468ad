"""The training loop: ``fit(cfg) -> Run``, the one entry point for the CLI, the studies and the notebooks.

Read top to bottom: ``fit`` locks the run folder, builds the run (data, method, model, optimiser), restores
a checkpoint when resuming, then runs the epochs: ``_train_epoch`` (the steps), ``_end_epoch`` (mining,
evaluation, records), ``_save_epoch`` (the files, committed together). ``resume=True`` continues an
interrupted run to the same numbers (bit-identical on the CPU with ``num_workers=0``). A method's step is in
``methods/``, the run-folder contract in ``runs/``. ``torchrun --nproc-per-node N -m adadf_core train
[adadf train options]`` runs the same loop in N processes (``runtime/distributed.py``); rank 0 alone writes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import torch

from adadf_core.config import config_differences, is_resolved, resolve_config, TrainConfig, validate_config
from adadf_core.engine.evaluate import evaluate
from adadf_core.engine.loaders import device_augment, load_splits, make_test_loader, make_train_loader
from adadf_core.methods import get_method, RunContext, unwrap
from adadf_core.models.networks import load_model_state
from adadf_core.runs.naming import default_run_dir
from adadf_core.runs.opening import open_run
from adadf_core.runs.reader import Run
from adadf_core.runs.writer import add_to_history, make_summary, new_history, RunWriter
from adadf_core.runtime import device as devmod, distributed
from adadf_core.utils.checkpoints import load as load_state, non_finite
from adadf_core.utils.progress import epoch_bar, epoch_line, note


class NonFiniteLossError(FloatingPointError):
    """The loss, or a weight after an optimiser step, became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the message says where, what the folder keeps and how to resume."""


@dataclasses.dataclass
class _Run:
    """Everything one training run holds while it runs."""
    cfg: TrainConfig
    writer: RunWriter
    run: RunContext
    method: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    interval: str                      # "epoch" | "step": when the scheduler steps
    scaler: torch.amp.GradScaler
    train_loader: Any
    generator: torch.Generator
    test_loader: Any                   # evaluated every epoch (the curve split when there is one)
    class_names: list
    history: dict
    tracked_info: Optional[dict] = None
    final_loader: Any = None           # the whole test split, evaluated after the last epoch (curve_test_samples)
    position: Optional[tuple] = None   # (epoch, step) being trained, for the interruption message
    committed: int = 0                 # the last epoch whose files are in the folder


def fit(cfg: TrainConfig, stop_after_epoch: Optional[int] = None) -> Run:
    """Train one run and return it. ``stop_after_epoch`` ends early (the run stays unfinished and can
    be continued with ``resume=True``). The run folder is locked for the whole run."""
    cfg = cfg if is_resolved(cfg) else resolve_config(cfg)
    validate_config(cfg)
    if cfg.run_dir is None:
        cfg = dataclasses.replace(cfg, run_dir=str(default_run_dir(cfg)))
    d = distributed.init(devmod.select_device(cfg.device).type)    # one process: distributed.SINGLE
    cfg = cfg if d.is_main else dataclasses.replace(cfg, progress=False)
    run_dir, lock, action = open_run(cfg, d)   # a bad or busy folder fails here, before data and model load
    r = None
    try:
        if action == "done":
            if cfg.resume and d.is_main:
                note(f"{run_dir} is already finished: nothing to resume")
            return Run(run_dir)
        r = _build(cfg, d, resume=action == "resume")
        start_epoch = _restore(r) if action == "resume" else _start(r)
        if d.is_main:
            whole = (r.final_loader or r.test_loader).dataset
            sizes = dict(num_test=len(whole), num_curve=len(r.test_loader.dataset) if r.final_loader else None)
            r.writer.config(cfg, unwrap(r.model), r.train_loader.dataset, resumed=action == "resume",
                            layout=dict(distributed.layout(r.model, d, r.run.channels_last), **sizes))
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.time()
            if hasattr(r.train_loader.sampler, "set_epoch"):      # AffectNet's balanced undersampler
                r.train_loader.sampler.set_epoch(epoch)
            row = _train_epoch(r, epoch)
            finished = _end_epoch(r, epoch, row, t0)
            if stop_after_epoch is not None and epoch >= stop_after_epoch and not finished:
                break
    except KeyboardInterrupt:
        kept = r.committed if r is not None else 0
        where = f"epoch {r.position[0]}, step {r.position[1]}" if r is not None and r.position else "start-up"
        raise TrainingInterrupted(f"interrupted at {where} of {run_dir}; the folder keeps {kept} finished "
                                  f"epoch(s): continue with --resume --run-dir {run_dir}") from None
    finally:
        lock.release()
    d.barrier()                               # rank 0 has committed the last epoch before anyone reads it
    return Run(run_dir)


def _build(cfg: TrainConfig, d: distributed.Dist, resume: bool) -> _Run:
    """Device, seeds, data, method, model, loaders and optimiser, in the order that fixes the RNG stream."""
    device = distributed.process_device(devmod.select_device(cfg.device), d)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    devmod.seed_everything(cfg.seed + d.rank, deterministic=device.type == "cpu")   # DDP copies rank 0's weights
    amp = cfg.amp if device.type == "cuda" else "off"
    method_cls = get_method(cfg.method)
    data = load_splits(cfg, with_train=True,
                       with_train_eval=cfg.track_samples > 0 and method_cls.needs_train_eval_set)
    train_set, test_set = data["train"], data["test"]
    run = RunContext(device=device, amp=amp, channels_last=devmod.use_channels_last(device, cfg),
                     train_eval_set=data.get("train_eval"), dist=d, augment=device_augment(cfg, device))
    method = method_cls(cfg, train_set.num_classes, train_set, run)
    # resuming: the weights come from the checkpoint, so the pretrained file is not read again
    model = method_cls.build_model(cfg, train_set.num_classes, None if resume else cfg.pretrained)
    model = model.to(device, memory_format=torch.channels_last) if run.channels_last else model.to(device)
    model = distributed.wrap_model(model, d, device, cfg.sync_bn)
    train_loader, _, generator = make_train_loader(cfg, train_set, device, d)
    curve_set = data.get("curve")
    test_loader = make_test_loader(cfg, curve_set if curve_set is not None else test_set,
                                   method_cls.test_batch_size(cfg), device, d)
    final_loader = None if curve_set is None else make_test_loader(cfg, test_set, method_cls.test_batch_size(cfg),
                                                                    device, d)
    optimizer = devmod.make_optimizer(model, cfg, device)
    scheduler, interval = method.make_scheduler(optimizer, len(train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=devmod.needs_grad_scaler(device, amp))
    history = new_history()
    return _Run(cfg, RunWriter(cfg.run_dir), run, method, model, optimizer, scheduler, interval, scaler,
                train_loader, generator, test_loader, list(train_set.class_names), history,
                final_loader=final_loader)


def _start(r: _Run) -> int:
    """A fresh run: clear what a run that died before its first checkpoint left; record the initial D."""
    if r.run.dist.is_main:
        r.writer.start_fresh()
    initial = r.method.initial_record()
    if initial.class_distribution is not None:
        r.history["class_distributions"].append(initial.class_distribution)
    r.tracked_info = initial.tracked
    return 1


def _restore(r: _Run) -> int:
    """Load ``checkpoint.pt`` into the run; returns the first epoch still to train."""
    path = r.writer.path / "checkpoint.pt"
    ckpt = load_state(path, "checkpoint", trust_pickle=r.cfg.trust_pickle)   # code-free read, CPU tensors
    diff = config_differences(TrainConfig.from_record(ckpt["config"]), r.cfg)
    if diff:
        raise ValueError(f"cannot resume {r.writer.path}: its config differs from this one ({'; '.join(diff)})")
    load_model_state(unwrap(r.model), ckpt["model"], path)
    devmod.load_optimizer_state(r.optimizer, ckpt["optimizer"])
    r.scheduler.load_state_dict(ckpt["scheduler"])
    r.scaler.load_state_dict(ckpt["scaler"])
    r.method.load_state_dict(ckpt["method"])
    r.history = ckpt["history"]
    r.generator.set_state(ckpt["loader_generator"])
    devmod.set_rng_state(distributed.rank_rng_state(ckpt, r.run.dist, path))
    r.tracked_info = r.method.initial_record().tracked
    r.committed = int(ckpt["epoch"])
    return r.committed + 1


def _train_epoch(r: _Run, epoch: int) -> dict:
    """One pass of training steps; returns the epoch's averaged logs."""
    cfg, method, model, optimizer, steps = r.cfg, r.method, r.model, r.optimizer, len(r.train_loader)
    model.train()
    lr = optimizer.param_groups[0]["lr"]
    sums: dict[str, Any] = {}
    bar = epoch_bar(cfg, steps, epoch)
    try:
        for step, (images, labels, indices) in enumerate(r.train_loader):
            r.position = (epoch, step + 1)
            images = r.run.train_images(images)
            labels = labels.to(r.run.device, non_blocking=True).long()
            indices = indices.to(r.run.device, non_blocking=True).long()
            with r.run.autocast():
                loss, logs = method.training_step(model, images, labels, indices, epoch, step, steps)
            if not bool(torch.isfinite(loss.detach())):
                raise NonFiniteLossError(
                    f"non-finite loss ({float(loss.detach()):g}) at epoch {epoch}, step {step + 1}/{steps} of "
                    f"{r.writer.path}; stopped. The run folder keeps the last good checkpoint "
                    f"(epoch {epoch - 1}); lower lr or check the data and pretrained weights")
            optimizer.zero_grad(set_to_none=True)
            r.scaler.scale(loss).backward()
            r.scaler.step(optimizer)
            r.scaler.update()
            method.after_optimizer_step(model)
            if r.interval == "step":
                r.scheduler.step()
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
    r.run.dist.sync_buffers(unwrap(model))        # one set of BatchNorm statistics for mining and evaluation
    row = {"epoch": epoch, "lr": lr}
    row.update({k: float(v) / steps for k, v in r.run.dist.mean_over(sums).items()})
    return row


def _end_epoch(r: _Run, epoch: int, row: dict, t0: float) -> bool:
    """Mine / record (the method), step an epoch scheduler, evaluate, then write the epoch's files.
    Returns whether the run is finished."""
    cfg, history, names = r.cfg, r.history, r.class_names
    record = r.method.end_epoch(r.model, epoch, r.train_loader)
    row.update(record.metrics)
    if r.interval == "epoch":
        r.scheduler.step()
    ev = evaluate(r.model, r.test_loader, device=r.run.device, amp=r.run.amp,
                  channels_last=r.run.channels_last, num_classes=len(names), dist=r.run.dist)
    row["test_acc"] = ev["acc"]
    row.update({f"acc_{name}": float(a) for name, a in zip(names, ev["per_class_acc"])})
    final = None
    if r.final_loader is not None and epoch == cfg.epochs:
        # the whole test split once, after the last epoch: the card's "last"; the curve split stays the curve
        final = evaluate(r.model, r.final_loader, device=r.run.device, amp=r.run.amp,
                         channels_last=r.run.channels_last, num_classes=len(names), dist=r.run.dist)
        row["final_test_acc"] = final["acc"]
        row.update({f"final_acc_{name}": float(a) for name, a in zip(names, final["per_class_acc"])})
    row["seconds"] = time.time() - t0
    add_to_history(history, row, record, (final or ev)["per_class_acc"])
    epoch_line(cfg, row)                      # (progress is off on every process but rank 0)
    return _save_epoch(r, epoch, ev, final)


def _save_epoch(r: _Run, epoch: int, ev: dict, final: Optional[dict] = None) -> bool:
    """The epoch's bookkeeping, then its files (rank 0; ``RunWriter.write_epoch``). ``final``: the whole
    test split's evaluation after the last epoch (its confusion matrix and features are the ones written)."""
    net = unwrap(r.model)
    bad = non_finite(net.state_dict())
    if bad:  # never written
        raise NonFiniteLossError(f"weights became NaN or infinite in epoch {epoch} of {r.writer.path} "
                                 f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); stopped before "
                                 f"writing them: the folder keeps epoch {epoch - 1}; lower lr or check the data")
    history, finished = r.history, epoch == r.cfg.epochs
    best = not history["best"] or ev["acc"] > history["best"]["acc"]
    if best:
        history["best"] = {"acc": ev["acc"], "epoch": epoch, "per_class": [float(a) for a in ev["per_class_acc"]]}
    rng = r.run.dist.gather_objects(devmod.rng_state())       # every process's RNG state, in rank order
    if r.run.dist.is_main:                                    # only rank 0 writes; the others keep the same history
        state = {"epoch": epoch, "config": dataclasses.asdict(r.cfg), "method": r.method.state_dict(),
                 "history": history}
        if not finished:  # lean: a finished run keeps no optimiser state (it is never resumed)
            state.update(model=net.state_dict(), optimizer=r.optimizer.state_dict(), rng=rng[0], rng_by_rank=rng,
                         scheduler=r.scheduler.state_dict(), scaler=r.scaler.state_dict(),
                         loader_generator=r.generator.get_state())
        r.writer.write_epoch(ev, history, r.tracked_info, net.state_dict(), state, best, finished,
                             make_summary(r.cfg, history, r.class_names, finished), final=final)
    r.committed = epoch
    return finished

