"""Where does the embedded study run in a regime like real training? Train the baseline and Ada-DF on one
SynthFER root and print, per epoch, what issue 19's regime asks for.

Per epoch and run: test accuracy, train accuracy (on the labels it trained on) and, for Ada-DF, how many of
the 7 rows of the class-distribution matrix D are the threshold fallback. At the end: the baseline's
movement over its last epochs (convergence), Fear's largest off-diagonal class in the last mined D, and the
seconds and images/s per run. Every run starts from the SynthFER backbone as the pipeline's runs do.

    python benchmarks/probe_regime.py --root DIR [--faces 2000] [--size 48] [--epochs 10] [--seeds 0]
        [--methods baseline adadf] [--noise-rate 0.0] [--out runs/probe]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from adadf_core.config import make_config
from adadf_core.data.classes import RAF_CLASSES
from adadf_core.engine.train import fit
from adadf_core.studies.analysis import fallback_rows
from adadf_core.studies.pretrain import synthfer_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="SynthFER root (default: the generated default copy)")
    ap.add_argument("--faces", type=int, default=2000, help="training faces used (max_train_samples)")
    ap.add_argument("--test-faces", type=int, default=None, help="test faces used (default: all)")
    ap.add_argument("--size", type=int, default=48, help="image size")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--epoch-threshold", type=int, default=2, help="Ada-DF's warm-up epochs ê")
    ap.add_argument("--lr-gamma", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=["baseline", "adadf"])
    ap.add_argument("--noise-rate", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    ap.add_argument("--out", default="runs/probe", help="runs folder (each run is reused when finished)")
    a = ap.parse_args()
    backbone = synthfer_backbone()
    tag = f"f{a.faces}-s{a.size}-e{a.epochs}-t{a.epoch_threshold}-g{a.lr_gamma}-n{a.noise_rate}-th{a.threads}"
    print(f"root {a.root}; {tag}; backbone {backbone}")
    for seed in a.seeds:
        for method in a.methods:
            cfg = make_config("synthfer", method=method, data_root=a.root, max_train_samples=a.faces,
                              max_test_samples=a.test_faces, image_size=a.size, epochs=a.epochs,
                              epoch_threshold=a.epoch_threshold, lr_gamma=a.lr_gamma, seed=seed,
                              noise_rate=a.noise_rate, noise_seed=seed, pretrained=str(backbone), progress=False,
                              num_threads=a.threads,
                              run_dir=str(Path(a.out) / f"{tag}-{method}-{seed}"))
            t0 = time.time()
            run = fit(cfg)
            seconds = time.time() - t0
            m = run.metrics
            dists = run.class_distributions if method == "adadf" else None
            print(f"\n{method} seed {seed}: {seconds:.0f} s, {a.faces * a.epochs / max(seconds, 1e-9):.0f} train images/s "
                  "(evaluation included)")
            for i, row in m.iterrows():
                fb = ""
                if dists is not None and i + 1 < len(dists):          # dists[0] is the initial D
                    fb = f"  fallback rows {int(fallback_rows(dists[i + 1], cfg.threshold).sum())}/7"
                print(f"  epoch {int(row['epoch']):>2}  test {row['test_acc']:.4f}  train {row['train_acc']:.4f}{fb}")
            last = m["test_acc"].to_numpy()
            k = min(3, len(last))
            print(f"  last {k} epochs move test accuracy by {100 * (last[-k:].max() - last[-k:].min()):.2f} points "
                  f"(last two: {100 * (last[-1] - last[-2]):+.2f})" if len(last) > 1 else "")
            if "final_test_acc" in m.columns:
                print(f"  whole test split after the last epoch: {m['final_test_acc'].iloc[-1]:.4f} "
                      f"({run.environment.get('num_test')} images; curve on {run.environment.get('num_curve')})")
            if dists is not None and len(dists):
                D = np.asarray(dists[-1])
                fear = RAF_CLASSES.index("Fear")
                off = np.delete(np.arange(7), fear)
                partner = off[np.argmax(D[fear, off])]
                print(f"  last D: Fear's largest off-diagonal is {RAF_CLASSES[partner]} ({D[fear, partner]:.3f}); "
                      f"diagonal {np.round(np.diag(D), 2).tolist()}")


if __name__ == "__main__":
    main()
