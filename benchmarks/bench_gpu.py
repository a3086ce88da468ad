"""Loader throughput on the CPU and training throughput on one GPU, for a RAF-DB-sized run (issue 12).

    python benchmarks/bench_gpu.py --quick      # CPU part only on a small set (about two minutes on 2 cores)
    python benchmarks/bench_gpu.py              # RAF-DB size; with a GPU also the CUDA part (under 8 minutes)

CPU part (always): a generated RAF-DB-layout set (12,271 training / 3,068 test JPEGs at 100x100, random
smooth images; ``--quick``: 2,048 / 512), read through ``loaders.make_train_loader`` with the ``official``
recipe at 224 px (resize, RandAugment rand-m5-n3-mstd0.5, flip, normalise, random erasing), batch 64; images
per second of the loader alone (no model) for each worker count in ``--workers``.

CUDA part (when ``torch.cuda.is_available()``): training images/s of ``train._train_epoch`` on GPU-resident
random batches (no loader) for baseline and Ada-DF, fp32 / bf16, channels_last on / off, ``torch.compile``
off / on (``--compile``), a short timed run of each setting; then one measured epoch of the full generated
set through the real loader (fp32, the authors' recipe on the CPU) and the projected time of a 75-epoch run
(epoch time x 75, the mining and test passes included). ``--pytest`` also runs the CUDA unit tests
(``pytest -m cuda``) in the same go. When there is no GPU the script says so and runs the CPU part.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_raf_set(root: Path, n_train: int, n_test: int, size: int = 100) -> Path:
    """A RAF-DB basic layout of smooth random RGB JPEGs (labels cycle over the 7 classes)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    (root / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    lines = []
    base = np.linspace(0, 1, size)[None, :, None]
    for split, n, width in (("train", n_train, 5), ("test", n_test, 4)):
        for i in range(1, n + 1):
            stem = f"{split}_{i:0{width}d}"
            colour = rng.uniform(0, 255, size=(1, 1, 3))
            img = (base * colour + base.transpose(1, 0, 2) * (255 - colour) + rng.normal(0, 12, (size, size, 3)))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "Image" / "aligned" /
                                                                          f"{stem}_aligned.jpg", quality=90)
            lines.append(f"{stem}.jpg {i % 7 + 1}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def raf_config(root: Path, **kw):
    from adadf_core.config import make_config, resolve_config
    return resolve_config(make_config("raf", "official", data_root=str(root), progress=False, **kw))


def loader_images_per_s(root: Path, workers: int, batches: int) -> float:
    """Images/s of the training loader (official recipe, 224 px, batch 64) with ``workers`` processes;
    the first batch (worker start-up) is not timed."""
    import torch
    from adadf_core.engine.loaders import load_splits, make_train_loader
    cfg = raf_config(root, num_workers=workers)
    train_set = load_splits(cfg, with_train=True)["train"]
    loader, _, _ = make_train_loader(cfg, train_set, torch.device("cpu"))
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(min(batches, len(loader) - 1)):
        images, _, _ = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def cpu_part(root: Path, args) -> None:
    print(f"CPU: loader images/s, official recipe at 224 px, batch 64, {os.cpu_count()} CPU cores "
          f"({args.batches} timed batches per setting)", flush=True)
    for workers in args.workers:
        rate = loader_images_per_s(root, workers, args.batches)
        print(f"  num_workers={workers:<2}  {rate:8.1f} images/s", flush=True)


def timed_steps(method: str, amp: str, channels_last: bool, compile_: bool, steps: int, batch: int,
                device_name: str = "cuda") -> float:
    """Training images/s of ``steps`` steps of ``train._train_epoch`` on random device batches at 224 px."""
    import torch
    from adadf_core.runtime import device as devmod
    from adadf_core.config import make_config, resolve_config
    from adadf_core.methods import RunContext, get_method
    from adadf_core.runs.writer import RunWriter
    from adadf_core.engine.train import _Run, _train_epoch
    cfg = resolve_config(make_config("raf", "official", method=method, batch_size=batch, amp=amp,
                                     channels_last=channels_last, progress=False, track_samples=0, device=device_name))
    device = torch.device(device_name)
    run = RunContext(device=device, amp=amp, channels_last=channels_last)
    n = batch * steps
    images = torch.randn(n, 3, 224, 224, device=device)
    labels = torch.randint(0, 7, (n,), device=device)
    data = torch.utils.data.TensorDataset(images, labels, torch.arange(n, device=device))
    data.labels, data.clean_labels = labels.cpu(), labels.cpu()
    data.flipped, data.num_classes, data.class_names = torch.zeros(n, dtype=torch.bool), 7, list("abcdefg")
    data.gt_distribution = None
    cls = get_method(method)
    m = cls(cfg, 7, data, run)
    model = cls.build_model(cfg, 7).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched, interval = m.make_scheduler(opt, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=devmod.needs_grad_scaler(device, amp))
    loader = torch.utils.data.DataLoader(data, batch_size=batch, drop_last=True)
    r = _Run(cfg, RunWriter("bench"), run, m, model, opt, sched, interval, scaler, loader, torch.Generator(),
             None, data.class_names, {})
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    _train_epoch(r, 1)                       # warm-up: cudnn autotune, compilation
    sync()
    t0 = time.perf_counter()
    _train_epoch(r, 1)
    sync()
    return n / (time.perf_counter() - t0)


def cuda_part(root: Path, args) -> None:
    import torch
    print(f"CUDA: {torch.cuda.get_device_name(0)}, training images/s at 224 px, batch 64, GPU-resident random "
          f"batches ({args.steps} timed steps)", flush=True)
    for method in ("baseline", "adadf"):
        for amp in ("off", "bf16"):
            for cl in (False, True):
                for comp in ((False, True) if args.compile else (False,)):
                    rate = timed_steps(method, amp, cl, comp, args.steps, 64)
                    print(f"  {method:<8} {'fp32' if amp == 'off' else amp:<5} channels_last={str(cl):<5} "
                          f"compile={str(comp):<5} {rate:8.1f} images/s", flush=True)
    from adadf_core.engine.train import fit
    cfg = raf_config(root, epochs=1, device="cuda", run_dir=str(root.parent / "epoch-run"), track_samples=0)
    t0 = time.perf_counter()
    run = fit(cfg)
    wall = time.perf_counter() - t0
    epoch = float(run.metrics["seconds"].iloc[0])
    print(f"  one epoch of Ada-DF on the generated set (fp32, official recipe, {cfg.num_workers or 'default'} "
          f"workers): {epoch:.1f} s (process {wall:.1f} s); projected 75 epochs: {75 * epoch / 60:.1f} min", flush=True)
    if args.pytest:
        subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", str(ROOT / "tests")], cwd=ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2,048 / 512 images, 20 timed loader batches")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time")
    p.add_argument("--batches", type=int, default=None, help="timed loader batches per worker count")
    p.add_argument("--steps", type=int, default=20, help="timed GPU training steps per setting")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--pytest", action="store_true", help="also run the CUDA unit tests (pytest -m cuda)")
    p.add_argument("--data-root", default=None, help="reuse a generated set")
    args = p.parse_args(argv)
    args.batches = args.batches or (20 if args.quick else 60)
    n_train, n_test = (2048, 512) if args.quick else (12_271, 3_068)
    import torch
    with tempfile.TemporaryDirectory(prefix="adadf-gpu-bench-") as tmp:
        t0 = time.perf_counter()
        root = Path(args.data_root) if args.data_root else make_raf_set(Path(tmp) / "raf", n_train, n_test)
        print(f"set: {n_train} / {n_test} RAF-layout images at 100 px ({time.perf_counter() - t0:.0f} s to write)")
        cpu_part(root, args)
        if torch.cuda.is_available():
            cuda_part(root, args)
        else:
            print("CUDA: no GPU on this machine; the CUDA part was not run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
