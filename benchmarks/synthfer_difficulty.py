"""How hard is SynthFER? Train a from-scratch ResNet-18 briefly and print its test accuracy.

Set-up (issue 2): torchvision resnet18(num_classes=7), Adam 1e-3, batch 64, images resized to 48x48,
horizontal flip only, 10 epochs on the 2000 training images; accuracy on the 800 test images.
Also prints the share of majority-vote labels that disagree with the dominant latent class.

    python benchmarks/synthfer_difficulty.py [--root DIR] [--epochs 10] [--size 48] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from tqdm.auto import tqdm

from adadf_core.data import synthfer


def load(root: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for line in (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines():
        name, label = line.split()
        if not name.startswith(split + "_"):
            continue
        img = Image.open(root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg").convert("RGB")
        xs.append(np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)))
        ys.append(int(label) - 1)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="SynthFER root (default: generate 2000/800 with seed 0)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()
    root = Path(a.root) if a.root else synthfer.ensure()
    meta = json.loads((root / "synthfer.json").read_text())
    print(f"SynthFER {root}: disagreement share {meta['disagreement_share']:.1%} "
          f"(train {meta['train']['disagreement_share']:.1%}, test {meta['test']['disagreement_share']:.1%}); "
          f"ready in {time.time() - t0:.1f} s")
    xtr, ytr = load(root, "train", a.size)
    xte, yte = load(root, "test", a.size)
    model = torchvision.models.resnet18(num_classes=7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(a.seed)
    t1 = time.time()
    for epoch in range(1, a.epochs + 1):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        for i in tqdm(range(0, len(perm) - 63, 64), desc=f"epoch {epoch}", leave=False):
            idx = perm[i:i + 64]
            x = xtr[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            loss = F.cross_entropy(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xte[i:i + 256]).argmax(1) for i in range(0, len(yte), 256)])
        acc = (pred == yte).float().mean().item()
        print(f"epoch {epoch}: loss {loss.item():.3f} test accuracy {acc:.1%}", flush=True)
    majority = torch.bincount(yte, minlength=7).max().item() / len(yte)
    print(f"final test accuracy {acc:.1%} (majority-class rate {majority:.1%}); "
          f"training {time.time() - t1:.0f} s")


if __name__ == "__main__":
    main()
