"""A pretrained backbone for SynthFER, standing in for the paper's MS-Celeb-1M ResNet-18.

Ada-DF freezes its shared trunk (conv1 .. layer1) and the paper starts from a face-pretrained ResNet-18.
From scratch, a frozen *random* trunk and attention-scaled logits make Ada-DF sit at chance for its first
epochs, which a short CPU budget cannot afford. So the SynthFER pipeline first trains a plain ResNet-18
(the `baseline` method) on a separate SynthFER pool — another seed, hence other faces and identities,
none of them in the study's train or test split — and saves its weights in the MS-Celeb file layout
(``{'state_dict': <torchvision ResNet-18 state dict>}``). Every SynthFER run then loads it with
``pretrained=<path>``, exactly as a RAF-DB run loads ``resnet18_msceleb.pth``. The classifier (fc) is
never loaded. The last-epoch weights are exported (no selection on any test set).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from adadf_core.config import make_config
from adadf_core.data.synthfer import default_root, ensure
from adadf_core.engine.train import fit
from adadf_core.runs.reader import resumable
from adadf_core.utils.fileio import atomic_write, write_json

DEFAULTS = dict(n_train=3000, n_test=200, seed=1, epochs=5, image_size=48, batch_size=64)
THREADS = 2        # fixed: threads change float rounding, so the backbone is the same on every machine


def default_path() -> Path:
    """Where the SynthFER backbone is kept: beside the generated SynthFER copy."""
    return default_root().parent / "synthfer_resnet18_pretrained.pth"


def synthfer_backbone(path: Optional[str | Path] = None, *, n_train: int = DEFAULTS["n_train"],
                      n_test: int = DEFAULTS["n_test"], seed: int = DEFAULTS["seed"],
                      epochs: int = DEFAULTS["epochs"], image_size: int = DEFAULTS["image_size"],
                      batch_size: int = DEFAULTS["batch_size"], device: str = "auto",
                      progress: bool = True) -> Path:
    """Return the path of the SynthFER-pretrained ResNet-18, training it first if it is not there yet.

    The pretraining pool is written to ``<path>.pool/`` and its run to ``<path>.run/``; both are kept, so
    the weights can be traced to their run (config.json, metrics.csv). An existing weights file is reused
    as it is; delete it to pretrain again.
    """
    path = Path(path) if path is not None else default_path()
    if path.is_file():
        return path
    if seed == 0:
        raise ValueError("seed=0 is the study's own SynthFER; the pretraining pool needs another seed")
    path.parent.mkdir(parents=True, exist_ok=True)
    # the pool keeps the unstructured model (docs/SYNTHFER.md): labelled unlike the study's data, as
    # MS-Celeb-1M is unlike RAF-DB, and the backbone stays the one earlier versions pretrained
    pool = ensure(path.with_name(path.name + ".pool"), n_train=n_train, n_test=n_test, seed=seed,
                  ambiguity_model="unstructured", progress=progress)
    run_dir = path.with_name(path.name + ".run")
    cfg = make_config("synthfer", method="baseline", data_root=str(pool), epochs=epochs,
                      image_size=image_size, batch_size=batch_size, recipe="light", track_samples=0,
                      max_train_samples=None, curve_test_samples=None, lr_gamma=0.9, num_threads=THREADS,
                      run_dir=str(run_dir), device=device, reuse=True, resume=resumable(run_dir),
                      progress=progress)
    run = fit(cfg)
    model = run.load_model(best=False)
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    atomic_write(path, lambda p: torch.save({"state_dict": state}, p))
    write_json(path.with_name(path.name + ".json"), {
        "what": "ResNet-18 pretrained on a separate SynthFER pool (stand-in for MS-Celeb-1M)",
        "pool": str(pool), "run": str(run.path), "pool_seed": seed, "n_train": n_train,
        "epochs": epochs, "image_size": image_size, "last_test_acc_on_pool": run.summary.get("last_acc")})
    return path


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="adadf pretrain-synthfer", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help=f"weights file (default {default_path()})")
    for name, value in DEFAULTS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=value,
                            help=f"{name.replace('_', ' ')} of the pretraining (default {value})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    args = parser.parse_args(argv)
    try:
        path = synthfer_backbone(args.out, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                                 epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
                                 device=args.device)
    except ValueError as error:
        print(f"adadf pretrain-synthfer: {error}", file=sys.stderr)
        return 2
    print(f"SynthFER-pretrained ResNet-18: {path}")
    return 0
