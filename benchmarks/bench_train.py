"""Training throughput and peak memory of the trainer (synthetic data, a few steps).

    python benchmarks/bench_train.py                      # baseline + adadf at 100x100, this machine
    python benchmarks/bench_train.py --sizes 100 224 --steps 5 --device cuda

For each (method, image size, class-distribution source) one child process runs ``--steps`` training
steps of ``train._train_epoch`` plus the method's ``end_epoch`` (for Ada-DF with ``cd_source=eval_pass``:
one more pass over the same loader) and reports training images per second (training images / wall
time of the epoch, so the extra pass shows up as a slowdown) and peak memory: CUDA
``torch.cuda.max_memory_allocated``; CPU the child's maximum resident set size (getrusage), which
includes the Python interpreter and torch itself (about 300-400 MiB).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class SyntheticSet:
    """Random images with the attributes data.dataset.FERDataset provides."""

    def __init__(self, n: int, size: int, num_classes: int = 7):
        import torch
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.clean_labels = self.labels.clone()
        self.flipped = torch.zeros(n, dtype=torch.bool)
        self.num_classes = num_classes
        self.class_names = [f"class{i}" for i in range(num_classes)]
        self.gt_distribution = None
        self.names = [str(i) for i in range(n)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), i


def run_one(method_name: str, size: int, cd_source: str, steps: int, batch: int, device_name: str) -> dict:
    import torch
    from adadf_core.runtime import device as devmod
    from adadf_core.config import make_config, resolve_config
    from adadf_core.methods import RunContext, get_method
    from adadf_core.runs.writer import RunWriter
    from adadf_core.engine.train import _Run, _train_epoch

    cfg = resolve_config(make_config("synthfer", "official", method=method_name, image_size=size,
                                     batch_size=batch, cd_source=cd_source, progress=False,
                                     device=device_name, track_samples=0, epochs=1))
    device = devmod.select_device(cfg.device)
    run = RunContext(device=device, amp=cfg.amp if device.type == "cuda" else "off",
                     channels_last=devmod.use_channels_last(device, cfg))
    devmod.seed_everything(0, deterministic=False)
    data = SyntheticSet(batch * (steps + 1), size)
    cls = get_method(method_name)
    method = cls(cfg, data.num_classes, data, run)
    model = cls.build_model(cfg, data.num_classes).to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched, interval = method.make_scheduler(opt, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=devmod.needs_grad_scaler(device, run.amp))
    loader = lambda ds: torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False, drop_last=True)

    def trainer(ds):    # the trainer's state for one epoch over ``ds`` (nothing is written)
        return _Run(cfg, RunWriter("bench"), run, method, model, opt, sched, interval, scaler, loader(ds),
                    None, torch.Generator(), None, data.class_names, {})

    # warm-up on one batch (allocator, cudnn autotune), then the timed epoch of `steps` batches
    _train_epoch(trainer(torch.utils.data.Subset(data, range(batch))), 1)
    timed = torch.utils.data.Subset(data, range(batch, batch * (steps + 1)))
    if device.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    _train_epoch(trainer(timed), 1)
    method.end_epoch(model, 1, loader(timed))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        kind = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kind = "process max RSS"
    return {"method": method_name, "size": size, "cd_source": cd_source if method_name != "baseline" else "-",
            "device": str(device), "batch": batch, "steps": steps, "seconds": seconds,
            "images_per_s": steps * batch / seconds, "peak_mib": peak, "memory": kind,
            "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[100], help="image sizes, e.g. 100 224")
    p.add_argument("--methods", nargs="+", default=["baseline", "adadf"])
    p.add_argument("--device", default="auto")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # child mode: method,size,cd_source
    args = p.parse_args(argv)
    if args.one:
        method, size, cd = args.one.split(",")
        print(json.dumps(run_one(method, int(size), cd, args.steps, args.batch_size, args.device)))
        return 0
    rows = []
    for size in args.sizes:
        for method in args.methods:
            sources = ["eval_pass", "train_pass"] if method != "baseline" else ["eval_pass"]
            for cd in sources:
                cmd = [sys.executable, __file__, "--one", f"{method},{size},{cd}", "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--device", args.device]
                res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                if res.returncode != 0:
                    print(res.stderr[-2000:], file=sys.stderr)
                    return res.returncode
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{r['method']:<9} {r['size']:>4}px  cd_source={r['cd_source']:<10} "
                      f"{r['images_per_s']:8.1f} img/s  peak {r['peak_mib']:8.0f} MiB ({r['memory']}) "
                      f"[{r['device']}, batch {r['batch']}, {r['steps']} steps, {r['threads']} threads]",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
