"""Epoch time of `adadf train` before and after issue 12's changes (mining pass, fused Adam), side by side.

    python benchmarks/bench_epoch.py            # 192 / 64 RAF-layout images at 224 px, batch 16, 2 workers
    python benchmarks/bench_epoch.py --quick    # 96 / 32 images at 112 px (a minute or two on 2 cores)

Four settings of one Ada-DF run (`--profile official`, the official recipe), each a fresh `adadf train`
child process on the same generated RAF-layout set (SynthFER faces written in RAF-DB's layout, read as
`--dataset raf`, so no vote distributions):

* ``today``: ``cd_source=eval_pass`` with ``pass_diagnostics=true``, ``fused_adam=false`` and
  ``channels_last=false``: the mining pass through both branches, torch's per-tensor Adam and contiguous
  tensors, what every run did before (the switches keep all three);
* ``exact``: the mining pass through the auxiliary branch only, per-tensor Adam, contiguous: the same numbers
  as today, bit for bit;
* ``new``: the default: auxiliary-branch mining, the fused Adam kernel and, from 160 px, channels-last
  tensors (the same arithmetic up to float rounding);
* ``train_pass``: the default with ``cd_source=train_pass``: no mining pass (not the authors' semantics,
  docs/METHOD.md §4).

It prints each epoch's seconds (metrics.csv ``seconds``: training steps, mining, evaluation), the process
wall time, the speed-up over ``today``, whether ``today`` and ``exact`` wrote the same metrics.csv (every
column but ``seconds``), and how far ``new``'s test accuracy and loss are from today's. ``--parts`` instead times the parts of an epoch in one process, interleaved
``--repeats`` times on one model and loader (training steps; the mining pass through both branches, as
before; the mining pass through the auxiliary branch; the test pass) and prints the medians and the epoch
times they add up to (all in the contiguous layout; the processes show channels-last's share), which a busy
neighbour disturbs less than separate processes. ``--repeats R`` runs the settings R times in turn (today, new, train_pass,
today, ...) and compares the medians: on a shared machine a single run is at the mercy of its neighbours.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"today": ["--cd-source", "eval_pass", "--set", "pass_diagnostics=true", "--no-fused-adam",
                      "--no-channels-last"],
            "exact": ["--cd-source", "eval_pass", "--no-fused-adam", "--no-channels-last"],
            "new": ["--cd-source", "eval_pass"],
            "train_pass": ["--cd-source", "train_pass"]}


def make_set(root: Path, n_train: int, n_test: int) -> Path:
    """A RAF-layout set of SynthFER faces (100x100 aligned crops), generated once into ``root``."""
    sys.path.insert(0, str(ROOT))
    from adadf_core.data import synthfer
    synthfer.ensure(root, n_train=n_train, n_test=n_test, seed=0, progress=False)
    return root


def run_setting(name: str, data: Path, out: Path, args) -> dict:
    """One `adadf train` child process; returns its epoch seconds, wall time and metrics rows."""
    run_dir = out / name
    cmd = [sys.executable, "-m", "adadf_core.cli", "train", "--dataset", "raf", "--data-root", str(data),
           "--profile", "official", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--image-size", str(args.size), "--num-workers", str(args.workers), "--run-dir", str(run_dir),
           "--set", "progress=false", *SETTINGS[name]]
    if args.threads:
        cmd += ["--num-threads", str(args.threads)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"setting {name!r} failed:\n{res.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"epochs": [float(r["seconds"]) for r in rows], "wall": wall,
            "rows": [{k: v for k, v in r.items() if k != "seconds"} for r in rows]}


def time_parts(data: Path, args) -> dict[str, list[float]]:
    """Seconds of each part of an epoch, measured ``args.repeats`` times in turn in this process."""
    import dataclasses
    sys.path.insert(0, str(ROOT))
    from adadf_core.runtime import distributed
    from adadf_core.config import make_config, resolve_config
    from adadf_core.runtime.device import make_optimizer
    from adadf_core.engine.evaluate import evaluate
    from adadf_core.engine.train import _build, _train_epoch
    cfg = resolve_config(make_config("raf", "official", data_root=str(data), batch_size=args.batch_size,
                                     image_size=args.size, num_workers=args.workers, progress=False,
                                     num_threads=args.threads, run_dir=str(data.parent / "parts"),
                                     channels_last=False))      # the parts in today's contiguous layout
    r = _build(cfg, distributed.SINGLE, resume=False)
    diag = r.method.diagnostics
    passes = {"mining, both branches (today)": dataclasses.replace(cfg, pass_diagnostics=True),
              "mining, auxiliary branch (new)": dataclasses.replace(cfg, pass_diagnostics=False)}
    optimizers = {f"training steps, {name}": make_optimizer(r.model, dataclasses.replace(cfg, fused_adam=fused),
                                                             r.run.device)
                  for name, fused in (("per-tensor Adam (today)", False), ("fused Adam (new)", True))}
    times: dict[str, list[float]] = {**{k: [] for k in optimizers}, **{k: [] for k in passes}, "test pass": []}
    for _ in range(args.repeats):
        for name, optimizer in optimizers.items():
            r.optimizer = optimizer
            t0 = time.perf_counter()
            _train_epoch(r, 1)
            times[name].append(time.perf_counter() - t0)
        for name, pass_cfg in passes.items():
            diag.cfg = pass_cfg
            t0 = time.perf_counter()
            r.method._eval_pass(r.model, r.train_loader)
            times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        evaluate(r.model, r.test_loader, num_classes=7)
        times["test pass"].append(time.perf_counter() - t0)
    return times


def print_parts(times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:<32} median {med[k]:6.1f} s   ({', '.join(f'{x:.1f}' for x in v)})", flush=True)
    loop, fused = med["training steps, per-tensor Adam (today)"], med["training steps, fused Adam (new)"]
    today = loop + med["mining, both branches (today)"] + med["test pass"]
    exact = loop + med["mining, auxiliary branch (new)"] + med["test pass"]
    new = fused + med["mining, auxiliary branch (new)"] + med["test pass"]
    train_pass = fused + med["test pass"]
    print(f"epoch today {today:.1f} s, exact (same numbers) {exact:.1f} s ({today / exact:.2f}x), new (fused "
          f"Adam) {new:.1f} s ({today / new:.2f}x), cd_source=train_pass {train_pass:.1f} s "
          f"({today / train_pass:.2f}x)", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="96 / 32 images at 112 px instead of 192 / 64 at 224")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="training image size (default 224; --quick 112)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="data-loader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--data-root", default=None, help="reuse a RAF-layout set instead of generating one")
    p.add_argument("--repeats", type=int, default=1, help="run the settings this many times, interleaved")
    p.add_argument("--parts", action="store_true", help="time the parts of an epoch in one process instead")
    args = p.parse_args(argv)
    n_train = args.n_train or (96 if args.quick else 192)
    n_test = args.n_test or (32 if args.quick else 64)
    args.size = args.size or (112 if args.quick else 224)
    with tempfile.TemporaryDirectory(prefix="adadf-bench-") as tmp:
        data = Path(args.data_root) if args.data_root else make_set(Path(tmp) / "data", n_train, n_test)
        print(f"{n_train} / {n_test} images at {args.size} px, batch {args.batch_size}, {args.workers} workers, "
              f"{args.epochs} epoch(s), profile official; os.cpu_count() = {os.cpu_count()}", flush=True)
        if args.parts:
            print_parts(time_parts(data, args))
            return 0
        results: dict[str, list] = {name: [] for name in args.settings}
        for rep in range(args.repeats):
            for name in args.settings:
                r = run_setting(name, data, Path(tmp) / f"rep{rep}", args)
                results[name].append(r)
                epochs = " ".join(f"{s:6.1f}" for s in r["epochs"])
                print(f"{name:<11} epoch s: {epochs}   process {r['wall']:6.1f} s", flush=True)
        median = {name: statistics.median(sum(r["epochs"]) for r in rs) for name, rs in results.items()}
        for name in args.settings:
            line = f"median {name:<11} {median[name]:6.1f} s per run of {args.epochs} epoch(s)"
            if name != "today" and "today" in median:
                line += f"   speed-up {median['today'] / median[name]:.2f}x"
            print(line, flush=True)
        if "today" in results and "new" in results:
            gap = max(abs(float(a[k]) - float(b[k])) for ra, rb in zip(results["today"], results["new"])
                      for a, b in zip(ra["rows"], rb["rows"]) for k in ("test_acc", "loss"))
            print(f"new against today: largest difference in test_acc or loss over the epochs {gap:.2e} "
                  "(fused Adam: rounding)")
        if "today" in results and "exact" in results:
            same = all(a["rows"] == b["rows"] for a, b in zip(results["today"], results["exact"]))
            print(f"today and exact metrics.csv identical (all columns but seconds): {'yes' if same else 'NO'}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
