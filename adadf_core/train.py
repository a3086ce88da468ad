"""The training loop: ``fit(cfg) -> Run``, the one entry point for the CLI, the studies and the notebooks.

Read top to bottom: ``fit`` locks the run folder, builds the run (data, method, model, optimiser), restores
a checkpoint when resuming, then runs the epochs: ``_train_epoch`` (the steps), ``_end_epoch`` (mining,
evaluation, records), ``_save_epoch`` (the files, committed together). ``resume=True`` continues an
interrupted run to the same numbers (bit-identical on the CPU with ``num_workers=0``). A method's step is in
``methods/``, the run-folder contract (naming, locking, writing, reading) in ``runs.py``.

Several processes: ``torchrun --nproc-per-node N -m adadf_core.train [adadf train options]`` (or ``adadf train
--nproc N``) runs the same loop in N processes with DistributedDataParallel (``distributed.py``): each takes
B/N of every global batch, only rank 0 locks and writes the run folder and prints.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from . import device as devmod
from .config import TrainConfig, config_differences, is_resolved, resolve_config, validate_config
from .evaluate import evaluate
from .loaders import load_splits, make_test_loader, make_train_loader
from .methods import RunContext, get_method
from .methods.base import unwrap
from . import distributed
from .model import load_model_state
from .progress import epoch_bar, epoch_line
from .checkpoints import load as load_state, non_finite
from .runs import (Run, RunExistsError, RunWriter, check_run_dir,  # noqa: F401 (fit raises RunExistsError)
                   default_run_dir, make_summary, open_run_dir)


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
    dist: distributed.Dist
    train_loader: Any
    generator: torch.Generator
    test_loader: Any
    class_names: list
    history: dict
    tracked_info: Optional[dict] = None
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
    if not d.is_main:
        cfg = dataclasses.replace(cfg, progress=False)
    run_dir, lock, action = _open_run_dir(cfg, d)   # a bad or busy folder fails here, before data and model load
    r = None
    try:
        if action == "done":
            return Run(run_dir)
        r = _build(cfg, d, resume=action == "resume")
        start_epoch = _restore(r) if action == "resume" else _start(r)
        if d.is_main:
            r.writer.config(cfg, unwrap(r.model), r.train_loader.dataset, resumed=action == "resume")
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


class _NoLock:
    """What a process other than rank 0 holds instead of the folder lock."""

    def release(self) -> None:
        pass


def _open_run_dir(cfg: TrainConfig, d: distributed.Dist):
    """Rank 0 locks the folder and decides fresh / resume / done (``runs.check_run_dir``); every process
    learns the decision, or fails with rank 0's error. Returns (run_dir, lock, action)."""
    if not d.active:
        run_dir, lock = open_run_dir(cfg)
        try:
            return run_dir, lock, check_run_dir(cfg, run_dir)[0]
        except BaseException:
            lock.release()
            raise
    lock, action, error = _NoLock(), None, None
    if d.is_main:
        try:
            run_dir, lock = open_run_dir(cfg)
            action = check_run_dir(cfg, run_dir)[0]
        except Exception as exc:          # told to every process, then raised
            lock.release()
            error = exc
    action, message = d.broadcast_object((action, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise RunExistsError(f"rank 0 could not open the run folder: {message}")
    return Path(cfg.run_dir), lock, action


def _build(cfg: TrainConfig, d: distributed.Dist, resume: bool) -> _Run:
    """Device, seeds, data, method, model, loaders and optimiser, in the order that fixes the RNG stream."""
    device = devmod.select_device(cfg.device)
    if d.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", d.local_rank)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    # every process has its own augmentation randomness; DDP copies rank 0's initial weights to all
    devmod.seed_everything(cfg.seed + d.rank, deterministic=device.type == "cpu")
    amp = cfg.amp if device.type == "cuda" else "off"
    method_cls = get_method(cfg.method)
    data = load_splits(cfg, with_train=True,
                       with_train_eval=cfg.track_samples > 0 and method_cls.needs_train_eval_set)
    train_set, test_set = data["train"], data["test"]
    run = RunContext(device=device, amp=amp, channels_last=devmod.use_channels_last(device, cfg),
                     train_eval_set=data.get("train_eval"), dist=d)
    method = method_cls(cfg, train_set.num_classes, train_set, run)
    # resuming: the weights come from the checkpoint, so the pretrained file is not read again
    model = method_cls.build_model(cfg, train_set.num_classes, None if resume else cfg.pretrained)
    model = model.to(device, memory_format=torch.channels_last) if run.channels_last else model.to(device)
    model = distributed.wrap_model(model, d, device, distributed.resolve_sync_bn(cfg.sync_bn, device, d))
    train_loader, _, generator = make_train_loader(cfg, train_set, device, d)
    test_loader = make_test_loader(cfg, test_set, method_cls.test_batch_size(cfg), device, d)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
    scheduler, interval = method.make_scheduler(optimizer, len(train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=devmod.needs_grad_scaler(device, amp))
    history = {"metrics": [], "class_distributions": [], "attention_rows": [], "tracked": [],
               "best": {}, "per_class_last": None, "seconds": 0.0}
    return _Run(cfg, RunWriter(cfg.run_dir), run, method, model, optimizer, scheduler, interval, scaler, d,
                train_loader, generator, test_loader, list(train_set.class_names), history)


def _start(r: _Run) -> int:
    """A fresh run: clear what a run that died before its first checkpoint left; record the initial D."""
    if r.dist.is_main:
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
    r.optimizer.load_state_dict(ckpt["optimizer"])
    r.scheduler.load_state_dict(ckpt["scheduler"])
    r.scaler.load_state_dict(ckpt["scaler"])
    r.method.load_state_dict(ckpt["method"])
    r.history = ckpt["history"]
    r.generator.set_state(ckpt["loader_generator"])
    devmod.set_rng_state(_own_rng_state(ckpt, r.dist, path))
    r.tracked_info = r.method.initial_record().tracked
    r.committed = int(ckpt["epoch"])
    return r.committed + 1


def _own_rng_state(ckpt: dict, d: distributed.Dist, path) -> dict:
    """This process's RNG state in a checkpoint (several processes: one state per rank)."""
    states = ckpt.get("rng_by_rank") or [ckpt["rng"]]
    if len(states) != d.world:
        raise ValueError(f"cannot resume {path} with {d.world} process(es): it was written by {len(states)}; "
                         f"expected the same number of processes (--nproc {len(states)})")
    return states[d.rank]


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
            images = r.run.to_device(images)
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
    r.dist.sync_buffers(unwrap(model))        # one set of BatchNorm statistics for mining and evaluation
    row = {"epoch": epoch, "lr": lr}
    row.update({k: float(v) / steps for k, v in _mean_over_processes(sums, r.dist).items()})
    return row


def _mean_over_processes(sums: dict, d: distributed.Dist) -> dict:
    """The epoch's summed logs averaged over the processes (each saw the same number of steps)."""
    if not d.active or not sums:
        return sums
    keys = sorted(sums)
    total = d.all_reduce_sum(torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64))
    return {k: float(v) / d.world for k, v in zip(keys, total.tolist())}


def _end_epoch(r: _Run, epoch: int, row: dict, t0: float) -> bool:
    """Mine / record (the method), step an epoch scheduler, evaluate, then write the epoch's files.
    Returns whether the run is finished."""
    cfg, history, names = r.cfg, r.history, r.class_names
    record = r.method.end_epoch(r.model, epoch, r.train_loader)
    row.update(record.metrics)
    if r.interval == "epoch":
        r.scheduler.step()
    ev = evaluate(r.model, r.test_loader, device=r.run.device, amp=r.run.amp,
                  channels_last=r.run.channels_last, num_classes=len(names), dist=r.dist)
    row["test_acc"] = ev["acc"]
    row.update({f"acc_{name}": float(a) for name, a in zip(names, ev["per_class_acc"])})
    row["seconds"] = time.time() - t0
    history["seconds"] += row["seconds"]
    history["metrics"].append(row)
    if r.dist.is_main:
        epoch_line(cfg, row)
    history["per_class_last"] = [float(a) for a in ev["per_class_acc"]]
    if record.class_distribution is not None:
        history["class_distributions"].append(record.class_distribution)
    history["attention_rows"] += record.attention_rows
    if record.tracked is not None:
        history["tracked"].append(record.tracked)
    return _save_epoch(r, epoch, ev)


def _save_epoch(r: _Run, epoch: int, ev: dict) -> bool:
    """The epoch's files, staged and moved in together (``RunWriter.commit_epoch``), checkpoint and summary last."""
    net = unwrap(r.model)
    bad = non_finite(net.state_dict())
    if bad:  # never written
        raise NonFiniteLossError(f"weights became NaN or infinite in epoch {epoch} of {r.writer.path} "
                                 f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); stopped before "
                                 f"writing them: the folder keeps epoch {epoch - 1}; lower lr or check the data")
    w, history = r.writer, r.history
    finished = epoch == r.cfg.epochs
    best = not history["best"] or ev["acc"] > history["best"]["acc"]
    if best:
        history["best"] = {"acc": ev["acc"], "epoch": epoch, "per_class": [float(a) for a in ev["per_class_acc"]]}
    rng_by_rank = r.dist.gather_objects(devmod.rng_state()) if r.dist.active else None
    if not r.dist.is_main:                     # only rank 0 writes; the others keep the same history
        r.committed = epoch
        return finished
    w.begin_epoch()
    w.array("confusion.npy", ev["confusion"])
    if best:
        w.torch_file("best_model.pt", {"model": net.state_dict(), "epoch": epoch, "acc": ev["acc"]})
        w.array("confusion_best.npy", ev["confusion"])
    if finished:
        w.arrays("features.npz", {"features": ev["features"], "labels": ev["labels"], "preds": ev["preds"]})
    w.records(history, r.tracked_info)
    state = {"epoch": epoch, "config": dataclasses.asdict(r.cfg), "method": r.method.state_dict(), "history": history}
    if finished:      # lean: the weights as safetensors, no optimiser state (a finished run is never resumed)
        w.finish(net.state_dict(), history["best"]["epoch"] == epoch, {"config": state["config"], "epoch": epoch})
    else:
        state.update(model=net.state_dict(), optimizer=r.optimizer.state_dict(), rng=devmod.rng_state(),
                     scheduler=r.scheduler.state_dict(), scaler=r.scaler.state_dict(),
                     loader_generator=r.generator.get_state())
        if rng_by_rank is not None:
            state["rng_by_rank"] = rng_by_rank
    w.torch_file("checkpoint.pt", state)
    w.json("summary.json", make_summary(r.cfg, history, r.class_names, finished))
    w.commit_epoch()
    r.committed = epoch
    return finished


def main(argv: Optional[list] = None) -> int:
    """``torchrun --nproc-per-node N -m adadf_core.train [adadf train options]``: one process of a run (the
    options are ``adadf train``'s); rank 0 prints the summary."""
    from .cli import train_main
    try:
        return train_main(argv, quiet=distributed.env_rank() > 0)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
