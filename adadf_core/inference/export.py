"""Ship a trained model: the target branch alone (what inference uses; Ada-DF's auxiliary branch and
first attention head are left out), as ONNX or TorchScript, with the class names and the preprocessing in
the file's metadata.

    adadf export runs/raf/adadf-seed0 --format onnx [--best] [--out model.onnx]

The exported graph maps images [N, 3, H, W] (RGB, resized to ``image_size``, scaled to [0, 1], then
normalised with ``mean`` / ``std``) to logits [N, C]; softmax gives the probabilities. SFEW runs were
evaluated on ten crops per image: average the logits over the crops (``metadata["tencrop"]``).
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from adadf_core import __version__
from adadf_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from adadf_core.inference.predict import load_predictor
from adadf_core.runs.reader import Run
from adadf_core.utils.fileio import atomic_write

FORMATS = ("onnx", "torchscript")


class TargetBranch(nn.Module):
    """Images -> logits of the inference branch (``forward_target``) of any adadf model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_target(images)["logits"]


def export_metadata(predictor, fmt: str) -> dict:
    run = Run(predictor.run_dir)
    cfg = run.config
    return {"adadf_version": __version__, "format": fmt, "source": predictor.source, "method": cfg.method,
            "dataset": cfg.dataset, "class_names": list(predictor.class_names), "image_size": int(cfg.image_size),
            "input": "float32 [N, 3, H, W], RGB, resized to image_size x image_size, scaled to [0, 1], "
                     "then (x - mean) / std", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "resize": "bilinear, antialiased (PIL Image.BILINEAR, as torchvision's Resize on PIL images); another "
                      "filter, such as PIL's default bicubic, changes the probabilities",
            "tencrop": cfg.dataset == "sfew", "output": "logits [N, C]; softmax gives the class probabilities",
            "note": predictor.note}


def export_model(run_dir, fmt: str = "onnx", out: Optional[str | Path] = None, best: bool = False,
                 trust_pickle: bool = False) -> Path:
    """Write the run's target branch to ``out`` (default ``<run_dir>/model_<last|best>.<onnx|pt>``)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not valid; expected one of {', '.join(FORMATS)}")
    predictor = load_predictor(run_dir, best=best, device="cpu", trust_pickle=trust_pickle)
    meta = export_metadata(predictor, fmt)
    net = TargetBranch(predictor.model).eval()
    size = meta["image_size"]
    example = torch.zeros(2, 3, size, size)
    out = Path(out) if out else predictor.run_dir / f"model_{'best' if best else 'last'}.{'onnx' if fmt == 'onnx' else 'pt'}"
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(net, example)
        atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files={"adadf.json": json.dumps(meta)}))
        return out
    return _export_onnx(net, example, meta, out)


def _export_onnx(net: nn.Module, example: torch.Tensor, meta: dict, out: Path) -> Path:

    # the export extra: only ONNX export needs it
    import onnx
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = "adadf", json.dumps(meta)
    atomic_write(out, lambda tmp: onnx.save(model, str(tmp)))
    return out


def read_metadata(path: str | Path) -> dict:
    """The metadata an exported file carries (ONNX ``metadata_props["adadf"]``, TorchScript ``adadf.json``)."""
    path = Path(path)
    if path.suffix == ".onnx":
        # the export extra: only ONNX export needs it
        import onnx
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props["adadf"])
    files = {"adadf.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["adadf.json"])
