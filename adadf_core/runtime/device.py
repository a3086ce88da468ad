"""Device choice, mixed precision and memory-format policy, seeding and RNG state capture.

Policy in one place:
* ``select_device("auto")`` picks CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` force one.
* Precision (docs/METHOD.md §9): ``amp="auto"`` is fp32, as the authors trained; mixed precision is a
  switch, CUDA only: ``"mixed"`` bf16 where the GPU supports it (else fp16), ``"bf16"``, ``"fp16"``;
  ``"off"`` is fp32. On CPU autocast is never used, whatever ``amp`` says. TF32: PyTorch's defaults are
  kept, so on Ampere and newer GPUs cuDNN convolutions run in TF32 (10-bit mantissa inputs, fp32
  accumulation; ``torch.backends.cudnn.allow_tf32`` is True by default) while matrix multiplications
  (the fc and attention heads) stay in full fp32 (``torch.backends.cuda.matmul.allow_tf32`` is False by
  default); ``environment`` records both for every CUDA run.
* fp16 needs a gradient scaler; bf16 does not (``needs_grad_scaler``).
* channels_last is on by default on CUDA, and on the CPU from ``CPU_CHANNELS_LAST_FROM`` pixels (``use_channels_last``).
* Adam runs its fused kernel by default on CPU and CUDA (``make_optimizer``; ``fused_adam``).
"""
from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch
import torchvision

AMP_CHOICES = ("auto", "mixed", "bf16", "fp16", "off")


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available else CPU; otherwise the named device, checked to exist."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} was requested but CUDA is not available on this machine; "
                               "use device='auto' or 'cpu'")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ValueError(f"device={name!r} is not valid; expected auto, cpu, cuda or cuda:N")


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None means full precision (fp32: always on CPU, and
    for ``auto`` and ``off``)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r} is not valid; expected one of {', '.join(AMP_CHOICES)}")
    if torch.device(device).type != "cuda" or amp in ("auto", "off"):
        return None
    if amp == "mixed":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast_context(device: torch.device, amp: str = "auto"):
    """``torch.autocast`` on CUDA with the chosen dtype; a no-op context on CPU or with amp off."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device, amp: str = "auto") -> bool:
    return amp_dtype(device, amp) == torch.float16


CPU_CHANNELS_LAST_FROM = 160


def use_channels_last(device: torch.device, cfg=None) -> bool:
    """``cfg.channels_last`` when set; else on for CUDA, and on the CPU for images of at least
    ``CPU_CHANNELS_LAST_FROM`` pixels, where oneDNN's channels-last convolutions are the faster ones. Measured
    on 2 EPYC cores, 2 threads, one AdaDFNet training step on 16 images (``benchmarks/bench_epoch.py`` has the
    whole-epoch figures): 64 px 0.26 s contiguous / 0.30 s channels-last, 100 px 0.54 / 0.58, 112 px 0.54 /
    0.54, 160 px 1.11 / 0.87, 224 px 1.85 / 1.52. The same arithmetic in another memory layout: the numbers
    agree up to float rounding, not bit for bit."""
    choice = getattr(cfg, "channels_last", None) if cfg is not None else None
    if choice is not None:
        return bool(choice)
    if torch.device(device).type == "cuda":
        return True
    size = getattr(cfg, "image_size", None) if cfg is not None else None
    return size is not None and int(size) >= CPU_CHANNELS_LAST_FROM


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices). ``deterministic`` asks torch for deterministic kernels
    (warn-only, so an op without a deterministic version still runs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict:
    """Every global RNG state a training run consumes (python, numpy, torch CPU, all CUDA devices)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def environment(device) -> dict:
    """What a result was computed with: library versions, platform, device and its name, threads."""
    device = torch.device(device)
    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "device": str(device), "num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()}
    if device.type == "cuda":
        env["tf32"] = {"cudnn_conv": bool(torch.backends.cudnn.allow_tf32),
                       "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    try:
        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return env


def make_optimizer(model, cfg, device: torch.device) -> torch.optim.Adam:
    """Adam over the trainable parameters (docs/METHOD.md §6). ``cfg.fused_adam`` (default on, where the
    device has the kernel: CPU and CUDA) runs one fused kernel over all parameters instead of a loop per
    tensor: about 3x faster a step on the CPU (22 M weights: 13 ms against 36 ms) for the same update up to
    float rounding (after 10 steps about 4 % of the weights differ from the loop's in their last bits).
    Off: torch's default, as in the authors' code. Resume stays bit-identical either way."""
    fused = cfg.fused_adam if cfg.fused_adam is not None else device.type in ("cpu", "cuda")
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, fused=bool(fused) or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimiser's own kernel choice (``fused``, ``foreach``):
    torch takes those flags from the saved groups, so a checkpoint written with the other kernel would switch
    it silently (``fused_adam`` is machinery: a run may resume with the other setting), and an Adam built fused
    that then steps through the loop fails under a GradScaler. The step counters go where the kept kernel
    wants them: float32 on the parameter's device for the fused kernel, on the CPU for the loop."""
    kept = [{k: group.get(k) for k in ("fused", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, kept):
        group.update(flags)
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if torch.is_tensor(step):
                where = p.device if flags["fused"] else torch.device("cpu")
                optimizer.state[p]["step"] = step.to(device=where, dtype=torch.float32)
