"""Evaluation of a model on a split: accuracy, per-class accuracy, confusion matrix, features.

SFEW's TenCrop test batches ([B, 10, 3, H, W]) are flattened for the forward pass and the target
logits o_2 (and the pooled features) averaged over the 10 crops (docs/METHOD.md §6).
``adadf evaluate RUN_DIR`` (cli.py) re-evaluates a run's saved model on the test split.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from adadf_core.methods.base import per_image, split_crops, unwrap
from adadf_core.runtime import device as devmod
from adadf_core.runtime.distributed import SINGLE, Dist, gather_evaluation


@torch.no_grad()
def evaluate(model, loader, device="cpu", amp: str = "off", channels_last: bool = False,
             num_classes: Optional[int] = None, dist: Dist = SINGLE) -> dict:
    """Run ``model`` (eval mode) over ``loader`` and return ``acc``, ``per_class_acc`` [C] (NaN for a
    class without test samples), ``confusion`` [C, C] (rows true, columns predicted), ``features``
    [N, F], ``labels`` [N], ``preds`` [N] (numpy). The model's ``forward_target`` (the inference
    branch alone) is used when it has one, else ``model``. With several processes (``dist``) each
    evaluates its batches (``distributed.shard_batches``) and every process gets the whole split's
    results, in file order."""
    device = torch.device(device)
    model = unwrap(model)
    was_training = model.training
    model.eval()
    feats, labels_all, preds_all, index_all = [], [], [], []
    try:
        for batch in loader:
            images, labels = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            images, crops = split_crops(images)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with devmod.autocast_context(device, amp):
                forward = getattr(model, "forward_target", None)
                out = forward(images) if forward is not None else model(images)
            logits = out["logits"].float()
            features = out.get("features")
            features = features.float() if features is not None else logits
            logits, features = per_image(logits, crops), per_image(features, crops)
            preds_all.append(logits.argmax(1).cpu())
            feats.append(features.cpu())
            labels_all.append(torch.as_tensor(labels).long().cpu())
            if dist.active:
                index_all.append(torch.as_tensor(batch[2]).long().cpu())
    finally:
        model.train(was_training)
    if dist.active:     # a process may have no test batch; the others still wait for its share
        own = [torch.cat(x).numpy() if x else None for x in (index_all, preds_all, labels_all, feats)]
        preds, labels, features = gather_evaluation(dist, *own)
    elif not preds_all:
        raise ValueError("evaluate: the loader yielded no batches (empty test split?)")
    else:
        preds, labels = torch.cat(preds_all).numpy(), torch.cat(labels_all).numpy()
        features = torch.cat(feats).numpy()
    c = int(num_classes) if num_classes is not None else int(max(labels.max(), preds.max()) + 1)
    confusion = np.bincount(labels * c + preds, minlength=c * c).reshape(c, c).astype(np.int64)
    totals = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)
    return {"acc": float((preds == labels).mean()), "per_class_acc": per_class, "confusion": confusion,
            "features": features, "labels": labels, "preds": preds}


def format_report(result: dict, class_names: list[str]) -> str:
    """Accuracy, per-class accuracy and the confusion matrix as text."""
    names = list(class_names) or [str(i) for i in range(len(result["per_class_acc"]))]
    width = max(len(n) for n in names) + 1
    lines = [f"accuracy: {result['acc']:.6f}", "per-class accuracy:"]
    lines += [f"  {n:<{width}} {a:.4f}" for n, a in zip(names, result["per_class_acc"])]
    lines.append("confusion (rows true, columns predicted):")
    lines.append(" " * (width + 2) + " ".join(f"{n[:6]:>6}" for n in names))
    for n, row in zip(names, result["confusion"]):
        lines.append(f"  {n:<{width}}" + " ".join(f"{int(v):>6}" for v in row))
    return "\n".join(lines)
