"""One run on several processes with torch.distributed (``torchrun``): the process group, the data shards
and the few collectives the methods need (docs/METHOD.md §6, "More than one process").

Launch: ``torchrun --nproc-per-node N -m adadf_core train [adadf train options]`` or ``adadf train --nproc N``
(which starts torchrun). NCCL on GPUs, gloo on the CPU; the model is wrapped in
``torch.nn.parallel.DistributedDataParallel`` by the trainer.

What holds, so that N processes with a per-process batch of B/N compute what one process with batch B does:

* ``GlobalBatchSampler``: every process draws the same global order (the single-process shuffle, or
  AffectNet's balanced subset from the shared seed) and takes its slice of each global batch of B; the last
  incomplete global batch is dropped as in one process, and nothing is padded, so no sample is seen twice
  in a pass (torch's ``DistributedSampler`` pads with repeats when N does not divide the set).
* ``shard_batches``: the test split in whole batches, batch k on process k mod N; ``gather_evaluation``
  puts every process's predictions back in file order.
* ``gather_rows``: an autograd all-gather, so the rank regularisation and the min-max attention
  normalisation see the global batch with gradients to every process's attention.
* ``all_reduce_sum`` and friends for the miner's sums and counts, the diagnostics and the epoch logs.
* BatchNorm of the global batch (``cfg.sync_bn``, on by default): torch's SyncBatchNorm on GPUs,
  ``GlobalBatchNorm`` on the CPU, where torch has no SyncBatchNorm kernel.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from adadf_core.utils.fileio import PROJECT_ROOT

DDP_ATTENTION_BATCH = ("global", "rank")


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes (one process: 0 of 1)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def device(self) -> torch.device:
        """Where this process's collectives run: its GPU under NCCL, else the CPU (gloo)."""
        if self.active and dist.is_initialized() and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    # --- collectives (no-ops in one process) ---------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place; returns it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_min(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` [b, ...] concatenated in rank order [N*b, ...], with gradients: the
        backward pass sums each process's gradient into the slice it came from."""
        if not self.active:
            return tensor
        if tensor.requires_grad:     # backward: each process's gradients summed into the slice it sent
            return _AllGatherRows.apply(tensor, self.rank, self.world)
        return _gather_rows(tensor, self.world)

    def mean_over(self, sums: dict) -> dict:
        """Per-process sums of logged values (floats or 0-dim tensors) averaged over the processes."""
        if not self.active or not sums:
            return sums
        keys = sorted(sums)
        values = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=self.device)
        total = self.all_reduce_sum(values)
        return {k: float(v) / self.world for k, v in zip(keys, total.tolist())}

    def gather_batch(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``gather_rows`` and the row where this process's own rows start in it."""
        return self.gather_rows(tensor), self.rank * tensor.shape[0]

    def gather_objects(self, obj: Any) -> list:
        """Every process's picklable ``obj``, in rank order (one process: ``[obj]``)."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every process, so that evaluation and
        the mining pass use one model."""
        if self.active:
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = Dist()


def env_world() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """RANK as torchrun sets it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def rank_rng_state(ckpt: dict, d: Dist, path) -> dict:
    """This process's RNG state in a checkpoint (several processes: one state per rank, ``rng_by_rank``)."""
    states = ckpt.get("rng_by_rank") or [ckpt["rng"]]
    if len(states) != d.world:
        raise ValueError(f"cannot resume {path} with {d.world} process(es): it was written by {len(states)}; "
                         f"expected the same number of processes (--nproc {len(states)})")
    return states[d.rank]


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The command line of one run on ``nproc`` processes of this machine: torchrun (``python -m
    torch.distributed.run``) starting ``python -m adadf_core train`` with ``adadf train``'s options."""
    if int(nproc) < 1:
        raise ValueError(f"nproc={nproc!r} is not valid; expected an integer >= 1")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(nproc)),
            "-m", "adadf_core", "train", *map(str, train_args)]


def launch(nproc: int, train_args: list[str], **run_kwargs) -> subprocess.CompletedProcess:
    """Run ``adadf train`` on ``nproc`` processes with torchrun and wait for it (DDP cannot run inside a
    Jupyter kernel: a notebook calls this, then reads the run folder with ``runs.reader.Run``). ``run_kwargs`` go to
    ``subprocess.run`` (e.g. ``capture_output=True``). The package's folder is put on PYTHONPATH."""
    root = str(PROJECT_ROOT)
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
    return subprocess.run(torchrun_command(nproc, train_args), env={**env, **run_kwargs.pop("env", {})},
                          **run_kwargs)


def init(device_type: str) -> Dist:
    """Join the process group torchrun describes (NCCL for CUDA, gloo on the CPU); one process: ``SINGLE``."""
    world = env_world()
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local)


def shutdown(d: Dist = SINGLE) -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, d: Dist) -> int:
    """The per-process batch B/N; B must be a multiple of N."""
    if batch_size % d.world:
        raise ValueError(f"batch_size={batch_size} is not valid with {d.world} processes; expected a multiple "
                         f"of {d.world} (each process takes batch_size / {d.world} of every global batch)")
    return batch_size // d.world


class GlobalBatchSampler(Sampler[int]):
    """This process's share of a global order: ``base`` (the same sampler, same seed, on every process)
    gives the order of one pass; of each complete global batch of ``batch_size`` this process takes the
    ``rank``-th slice of ``batch_size / world``. ``set_epoch`` is passed on (AffectNet's sampler)."""

    def __init__(self, base, batch_size: int, d: Dist):
        self.base, self.batch, self.d = base, int(batch_size), d
        self.share = per_rank_batch(self.batch, d)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return (len(self.base) // self.batch) * self.share

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        lo = self.d.rank * self.share
        for start in range(0, len(order) - self.batch + 1, self.batch):
            yield from order[start + lo:start + lo + self.share]


def shard_batches(n: int, batch_size: int, d: Dist) -> list[int]:
    """Indices of the test batches this process evaluates: batch k (file order, ``batch_size`` each, the
    last one shorter) goes to process k mod N; every sample once."""
    starts = range(0, n, int(batch_size))
    return [i for k, s in enumerate(starts) if k % d.world == d.rank for i in range(s, min(s + batch_size, n))]


def gather_evaluation(d: Dist, indices, preds, labels, features) -> tuple:
    """Every process's evaluated rows (numpy arrays; None for a process without a test batch), back in
    file order: (preds, labels, features)."""
    parts = [p for p in d.gather_objects((indices, preds, labels, features)) if p[0] is not None]
    if not parts:
        raise ValueError("evaluate: no process got a test batch (empty test split?)")
    idx = np.concatenate([p[0] for p in parts])
    order = np.argsort(idx, kind="stable")
    return tuple(np.concatenate([p[k] for p in parts])[order] for k in (1, 2, 3))


def process_device(device: torch.device, d: Dist) -> torch.device:
    """This process's device: with several processes, ``cuda`` means the GPU of its local rank."""
    if d.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", d.local_rank)
    return device


def wrap_model(model: torch.nn.Module, d: Dist, device: torch.device, sync_bn: Optional[bool]) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (BatchNorm synchronised per ``resolve_sync_bn``: torch's
    SyncBatchNorm on GPUs, ``GlobalBatchNorm`` on the CPU); unchanged in one process."""
    if not d.active:
        return model
    if resolve_sync_bn(sync_bn, d):
        model = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda"
                 else convert_to_global_batchnorm(model))
    ids = [device.index if device.index is not None else d.local_rank] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    sync = ({"forward_sync_buffers": True} if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else {"broadcast_buffers": True})          # rank 0's BatchNorm statistics before every step
    return ddp(model, device_ids=ids, **sync)


def layout(model: torch.nn.Module, d: Dist, channels_last: bool) -> dict:
    """What a run's record says of how it was laid out: processes, BatchNorm mode, memory format."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        mode = "none"
    elif any(isinstance(m, (GlobalBatchNorm, torch.nn.SyncBatchNorm)) for m in bns):
        mode = "global-batch"
    else:
        mode = "per-process" if d.active else "one-process"
    return {"processes": d.world, "batchnorm": mode, "channels_last": bool(channels_last)}


def resolve_sync_bn(choice: Optional[bool], d: Dist) -> bool:
    """``sync_bn``: None or True = BatchNorm statistics of the global batch whenever there are several
    processes; False = each process normalises its own B/N (no effect in one process)."""
    return (True if choice is None else bool(choice)) and d.active


def _gather_rows(tensor: torch.Tensor, world: int) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _AllGatherRows(torch.autograd.Function):
    """``gather_rows`` with gradients: the backward pass sums every process's gradient of the gathered rows and
    hands each process the slice of its own rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        ctx.rows, ctx.rank = tensor.shape[0], rank
        return _gather_rows(tensor, world)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes, with gradients: the backward pass sums every process's gradient, so each
    process gets the gradient of the sum of all processes' losses with respect to its own share."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all processes, for the CPU
    (gloo), where torch's SyncBatchNorm has no kernel. With n the rows of every process together (sums
    all-reduced with gradients, two collectives a layer)::

        mu = sum_r sum_i x_ri / n,   var = sum_r sum_i (x_ri - mu)^2 / n,   y = (x - mu) / sqrt(var + eps) * w + b

    which is what one process computes on the whole batch; the running statistics take the unbiased
    variance, as torch's BatchNorm does. In eval mode, or without a process group, it is plain BatchNorm.
    Written with elementwise operations, it keeps about one more activation-sized tensor per layer for the
    backward pass than torch's fused kernel."""

    def __init__(self, *args, input_dims: tuple = (4,), **kwargs):
        super().__init__(*args, **kwargs)
        self.input_dims = tuple(input_dims)      # 4 for a converted BatchNorm2d, (2, 3) for BatchNorm1d

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in self.input_dims:
            raise ValueError(f"expected a {' or '.join(map(str, self.input_dims))}D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1, *[1] * (x.dim() - 2)]
        rows = torch.full((1,), float(x.numel() // x.shape[1]), dtype=x.dtype)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), rows]))      # the count rides with the sums
        n = float(sums[-1].detach())
        if n <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got {n:.0f} over all "
                             "processes")
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / n
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), n)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - m).add_(mean, alpha=m)
        self.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)


def convert_to_global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every BatchNorm layer replaced by a ``GlobalBatchNorm`` sharing its weights, bias and
    running statistics (the state dict keeps its keys); a BatchNorm ``module`` itself is returned converted."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        dims = (2, 3) if isinstance(module, torch.nn.BatchNorm1d) else (
            5,) if isinstance(module, torch.nn.BatchNorm3d) else (4,)
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, input_dims=dims)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if getattr(module, name, None) is not None:
                setattr(new, name, getattr(module, name))
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module
