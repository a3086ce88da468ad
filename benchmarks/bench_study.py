"""The embedded study's training throughput, and two ways to spend the machine's cores on it.

    python benchmarks/bench_study.py [--repeats 2] [--epochs 2] [--faces 1000]

Layout A: one process with all cores' threads trains two runs one after the other (what a sequential study
does). Layout B: two processes with one thread each train one run each, side by side (``ADADF_DEVICES=cpu,cpu``
with ``num_threads=1``). Both train the same two Ada-DF runs (seeds 0 and 1) at the study's preset (SynthFER,
image size and recipe from ``config.PRESETS["synthfer"]``, the SynthFER backbone), each for ``--epochs`` epochs
on ``--faces`` training faces; the per-epoch evaluation is on the preset's curve split. The layouts alternate
(A B A B ...); the figure is training images per second of wall time (evaluation included), median over the
repeats, and B / A.

It also prints the machine's arithmetic: the measured float32 matmul rate with all threads (GFLOP/s, a
2048 x 2048 product) and the share of it one training step of the study's model uses (FLOPs counted by
``torch.utils.flop_counter``), so "images/s" can be read as a fraction of what the CPU can do.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(run_dir: str, seed: int, threads: int, epochs: int, faces: int) -> None:
    from adadf_core.config import make_config
    from adadf_core.engine.train import fit
    from adadf_core.studies.pretrain import synthfer_backbone

    cfg = make_config("synthfer", method="adadf", seed=seed, epochs=epochs, max_train_samples=faces,
                      num_threads=threads, pretrained=str(synthfer_backbone(progress=False)), progress=False,
                      run_dir=run_dir)
    fit(cfg)


def layout(kind: str, tmp: Path, epochs: int, faces: int, index: int) -> float:
    """Wall seconds for the two runs in layout ``kind`` ("A" or "B")."""
    cmd = [sys.executable, __file__, "--child"]
    dirs = [str(tmp / f"{kind}{index}-seed{s}") for s in (0, 1)]
    start = time.perf_counter()
    if kind == "A":
        for s, d in enumerate(dirs):
            subprocess.run(cmd + [d, str(s), "2", str(epochs), str(faces)], check=True, cwd=ROOT)
    else:
        procs = [subprocess.Popen(cmd + [d, str(s), "1", str(epochs), str(faces)], cwd=ROOT)
                 for s, d in enumerate(dirs)]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"layout B: a child failed (exit {p.returncode})")
    return time.perf_counter() - start


def arithmetic(size: int) -> tuple[float, float]:
    """(matmul GFLOP/s with torch's default threads, FLOPs of one Ada-DF training image at ``size``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from adadf_core.config import make_config, resolve_config
    from adadf_core.methods import get_method

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    rate = 10 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9
    cfg = resolve_config(make_config("synthfer", method="adadf"))
    model = get_method("adadf").build_model(cfg, 7, None)
    x = torch.randn(8, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        logits = out["logits"] if isinstance(out, dict) else out
        logits.float().sum().backward()
    return rate, counter.get_total_flops() / 8


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_dir, seed, threads, epochs, faces = sys.argv[2:7]
        child(run_dir, int(seed), int(threads), int(epochs), int(faces))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--faces", type=int, default=1000)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from adadf_core.config import PRESETS

    size = PRESETS["synthfer"]["image_size"]
    images = 2 * a.epochs * a.faces
    times: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        for i in range(a.repeats):
            for kind in ("A", "B"):
                seconds = layout(kind, Path(tmp), a.epochs, a.faces, i)
                times[kind].append(seconds)
                print(f"repeat {i + 1} layout {kind}: {seconds:.1f} s, {images / seconds:.1f} training images/s",
                      flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"A (1 process x 2 threads, runs in turn): median {med['A']:.1f} s = {images / med['A']:.1f} images/s")
    print(f"B (2 processes x 1 thread, side by side): median {med['B']:.1f} s = {images / med['B']:.1f} images/s")
    print(f"B / A throughput: {med['A'] / med['B']:.2f}x")
    rate, flops = arithmetic(size)
    for k in ("A", "B"):
        used = images / med[k] * flops / 1e9
        print(f"layout {k}: {used:.1f} GFLOP/s of training arithmetic (forward + backward, {flops / 1e9:.3f} GFLOP "
              f"an image at {size} px) = {100 * used / rate:.0f} % of the measured matmul rate {rate:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
