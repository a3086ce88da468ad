"""Use a trained model: class probabilities for your own images, with exactly the run's test-time
preprocessing (its image size, recipe, normalisation and, for SFEW runs, TenCrop averaging).

    predictor = load_predictor("runs/raf/adadf-seed0", best=True)
    probs = predictor(["face1.jpg", pil_image, uint8_array])      # [N, C] numpy, rows sum to 1
    predictor.class_names                                           # the run's class names, in label order

Raw photographs go through ``align_photos`` first (MTCNN + the five-point alignment the training data had).

A prediction never depends on which other images share the batch: the model runs in eval mode (BatchNorm
uses its running statistics). SLM-AEA's faithful evaluation anchors on the *test batch's* mean feature,
which would make it batch-dependent; a predictor uses the head's running mean of the training batch means
instead and says so in ``predictor.note``.

``adadf predict`` (cli.py) is the command-line face of this module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from adadf_core.data import align
from adadf_core.data.images import decode_image
from adadf_core.data.layouts import IMAGE_EXTS
from adadf_core.data.transforms import build_transform
from adadf_core.methods.base import per_image, split_crops
from adadf_core.runs.reader import Run
from adadf_core.runtime.device import select_device, use_channels_last
from adadf_core.utils.fileio import write_text


@dataclass
class Predictor:
    """A run's model and its test-time preprocessing: a callable from images to class probabilities."""
    model: torch.nn.Module
    transform: Any
    class_names: list
    device: torch.device
    source: str                      # the run folder and which weights, for messages
    run_dir: Optional[Path] = None
    note: str = ""
    channels_last: bool = False      # the memory layout the run trained and evaluated in

    @torch.no_grad()
    def __call__(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, C] for ``images``: paths, PIL images or uint8 arrays [H, W, 3]."""
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.stack([self.transform(_as_pil(img)) for img in images[start:start + batch_size]])
            x, crops = split_crops(x)
            x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
            logits = self.model.forward_target(x.to(self.device))["logits"].float()
            out.append(torch.softmax(per_image(logits, crops), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), dtype=np.float32)


def _as_pil(image):

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 [H, W, 3] or [H, W]; got {image.dtype} {image.shape}")
        return Image.fromarray(image).convert("RGB")
    return decode_image(image)


SYNTHFER_NOTE = ("trained on SynthFER: this model has seen only synthetic 48-pixel faces, so its predictions on "
                 "photographs say little about real expressions")


def load_predictor(source: str | os.PathLike, best: bool = False, device: str = "cpu",
                   trust_pickle: bool = False) -> Predictor:
    """The predictor of a run folder, or of a weights file inside one (``best_model.pt`` picks the best
    epoch, ``checkpoint.pt`` the last). ``best`` picks the best-epoch weights of a run folder."""
    source = Path(source)
    if source.is_file():
        best = best or source.name.startswith("best_model")
        source = source.parent
    run = Run(source)
    dev = select_device(device)
    model = run.load_model(best=best, device=dev, trust_pickle=trust_pickle)
    cfg = run.config
    note = ""
    head = getattr(model, "head", None)
    if getattr(head, "eval_mean", None) == "batch":
        head.eval_mean = "running"
        note = ("SLM-AEA: predictions use the running mean of the training batch means; the faithful test-batch "
                "mean would make a prediction depend on the other images in the batch")
    if cfg.dataset == "synthfer":
        note = "; ".join(filter(None, [SYNTHFER_NOTE, note]))
    transform = build_transform(cfg.dataset, "test", cfg.image_size, cfg.recipe)
    weights = "best-epoch" if best else "last-epoch"
    layout = use_channels_last(dev, cfg)      # as the run evaluated: the same numbers, not just up to rounding
    model = model.to(memory_format=torch.channels_last) if layout else model
    return Predictor(model.eval(), transform, run.class_names, dev, f"{run.path} ({weights} weights)", run.path, note,
                     layout)


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``paths`` (files, or folders searched recursively), hidden files skipped,
    in a stable order. A path that does not exist is an error naming it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist (expected an image file or a folder of images)")
    return found


def read_images(files: Sequence[str | os.PathLike]) -> tuple[list, list[str]]:
    """Decode each file (the loaders' decoder); an unreadable one becomes None with its reason, so that one
    bad file is listed rather than stopping the folder (the rule ``align_photos`` follows too)."""
    images, reasons = [], []
    for path in files:
        try:
            images.append(decode_image(path))
            reasons.append("")
        except (OSError, ValueError) as error:
            images.append(None)
            reasons.append(f"unreadable ({error})")
    return images, reasons


def align_photos(photos: Sequence, size: int = 100, detector=None) -> tuple[list, list[str]]:
    """Detect and align the face of each raw photograph (paths or RGB uint8 arrays; MTCNN in its own
    process, the five-point template of ``adadf align``). Returns (aligned uint8 crops, None where no face
    could be used, and the reason for each None)."""
    if detector is None:
        if not align.mtcnn_available():
            raise RuntimeError("--align needs MTCNN: pip install -e '.[align]'")
        detector = align.MTCNNDetector()
    images, reasons = [], []
    for p in photos:
        try:
            images.append(p if isinstance(p, np.ndarray) else align.load_rgb(p)[0])
            reasons.append("")
        except (OSError, ValueError) as error:
            images.append(None)
            reasons.append(f"unreadable ({error})")
    readable = [i for i, img in enumerate(images) if img is not None]
    faces = detector.detect([images[i] for i in readable], [str(i) for i in readable])
    crops: list[Optional[np.ndarray]] = [None] * len(photos)
    for i, (_face, crop) in zip(readable, align.align_detected([images[i] for i in readable], faces, size=size)):
        crops[i] = crop
        if crop is None:
            reasons[i] = "no face found"
    return crops, reasons


def write_csv(path: str | os.PathLike, names: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
              status: Optional[Sequence[str]] = None) -> None:
    """One row per image: the image, the predicted class, then one probability column per class."""
    rows = []
    for k, name in enumerate(names):
        p = probs[k] if probs is not None and k < len(probs) and not np.isnan(probs[k]).any() else None
        row = {"image": str(name), "prediction": class_names[int(np.argmax(p))] if p is not None else "",
               "status": (status[k] if status else "") or "ok"}
        row.update({f"p_{c}": (float(p[j]) if p is not None else float("nan")) for j, c in enumerate(class_names)})
        rows.append(row)
    write_text(path, pd.DataFrame(rows).to_csv(index=False, float_format="%.6f"))
