"""What SynthFER's ground truth shows, which no real data set can: how close Ada-DF's three distributions
come to the annotators' votes, and whether its attention tracks ambiguity (docs/METHOD.md §10).

Every SynthFER training face carries the vote shares of 10-40 simulated annotators, its true label
distribution. For a finished Ada-DF run, ``sample_table`` passes the run's training faces (test transform,
eval mode, last-epoch weights) through the model once and gives, per face,

* the JS divergence to the votes of the label distribution d (auxiliary branch), of the class
  distribution D[y] of its training label (the run's last mined D) and of the fused target f;
* the vote entropy (how ambiguous the face is), the raw attention ā (the mean of the two heads) and its
  normalised weight w (min-max over the whole pass, the batch-free form of §2.4), and whether its label
  was flipped by synthetic noise.

``divergence_summary`` and ``attention_summary`` turn the tables of several seeds into means with 95 %
intervals over seeds (one value per seed, so the interval is about seeds, not faces), overall, by
ambiguity tertile and for flipped vs clean faces; ``claims`` states which of the paper's claims hold.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from adadf_core.data.dataset import load_split
from adadf_core.engine.loaders import resolve_data_root
from adadf_core.ops import adadf_ops as A
from adadf_core.studies.protocol import t_interval

TARGETS = {"d": "label distribution d", "D[y]": "class distribution D[y]", "f": "fused target f"}
TERTILES = ("clear", "middle", "ambiguous")


def sample_table(run, device: str = "cpu", batch_size: int = 256) -> pd.DataFrame:
    """Per training face of ``run`` (an Ada-DF-family run on SynthFER): ``js_d``, ``js_D[y]``, ``js_f``,
    ``entropy``, ``attention``, ``weight``, ``label``, ``clean_label``, ``flipped``."""
    cfg = run.config
    if cfg.method not in A.VARIANTS:
        raise ValueError(f"{run.path.name}: method {cfg.method!r} has no label/class distributions; "
                         f"expected one of {', '.join(A.VARIANTS)}")
    ds = load_split(cfg.dataset, resolve_data_root(cfg), "train", image_size=cfg.image_size, recipe="none",
                    cache="none", max_samples=cfg.max_train_samples, noise_rate=cfg.noise_rate,
                    noise_seed=cfg.noise_seed, noise_file=cfg.noise_file, progress=False)
    if ds.gt_distribution is None:
        raise ValueError(f"{run.path.name}: data set {cfg.dataset!r} has no ground-truth votes (SynthFER only)")
    model = run.load_model(best=False, device=device).eval()
    d_parts, a_parts = [], []
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            images = torch.stack([ds[i][0] for i in range(start, min(start + batch_size, len(ds)))]).to(device)
            out = model(images)
            d_parts.append(torch.softmax(out["aux_logits"].float(), 1).cpu())
            a_parts.append(out["attention"].float().mean(1).cpu())
    d, abar = torch.cat(d_parts), torch.cat(a_parts)
    lo, hi = float(abar.min()), float(abar.max())
    w = (cfg.lambda_min + (cfg.lambda_max - cfg.lambda_min) * (abar - lo) / (hi - lo + 1e-12)).clamp(
        cfg.lambda_min, cfg.lambda_max)
    D = torch.as_tensor(run.class_distributions[-1]).float()
    rows = D[ds.labels.long()]
    fused = A.variant_target(cfg.method, d, rows, w)
    div = A.ambiguity_divergences(ds.gt_distribution.float(), d, rows, fused)
    gt = ds.gt_distribution.numpy().astype(np.float64)
    entropy = -(gt * np.log(np.clip(gt, 1e-12, 1))).sum(1)
    return pd.DataFrame({"js_d": div["js_gt_label"].numpy(), "js_D[y]": div["js_gt_class"].numpy(),
                         "js_f": div["js_gt_fused"].numpy(), "entropy": entropy, "attention": abar.numpy(),
                         "weight": w.numpy(), "label": ds.labels.numpy(), "clean_label": ds.clean_labels.numpy(),
                         "flipped": ds.flipped.numpy()})


def tertile(entropy: np.ndarray) -> np.ndarray:
    """``clear`` / ``middle`` / ``ambiguous`` by the tertiles of the vote entropy (within one run)."""
    cuts = np.quantile(entropy, [1 / 3, 2 / 3])
    return np.asarray(TERTILES, dtype=object)[np.searchsorted(cuts, entropy, side="right")]


def _over_seeds(per_seed: pd.DataFrame, keys: Sequence[str], value: str = "value") -> pd.DataFrame:
    rows = []
    for key, g in per_seed.groupby(list(keys), sort=False):
        mean, std, lo, hi, n = t_interval(g[value])
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                     "mean": mean, "std": std, "ci_lo": lo, "ci_hi": hi, "seeds": n})
    return pd.DataFrame(rows)


def divergence_summary(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean JS divergence to the votes of d, D[y] and f, with a 95 % interval over seeds (``tables``: seed ->
    ``sample_table``), overall, per ambiguity tertile and, where labels were flipped, for flipped and clean
    faces; plus the paired differences f − d and f − D[y] (negative: f is closer to the votes)."""
    per_seed = []
    for seed, t in tables.items():
        groups = {"all faces": np.ones(len(t), bool)}
        groups.update({f"{name} third (vote entropy)": tertile(t["entropy"].to_numpy()) == name for name in TERTILES})
        if t["flipped"].any():
            groups.update({"flipped labels": t["flipped"].to_numpy(), "clean labels": ~t["flipped"].to_numpy()})
        for group, mask in groups.items():
            sub = t[mask]
            values = {name: float(sub[f"js_{name}"].mean()) for name in TARGETS}
            values.update({"f − d": values["f"] - values["d"], "f − D[y]": values["f"] - values["D[y]"]})
            per_seed += [dict(seed=seed, group=group, target=k, value=v, faces=int(mask.sum()))
                         for k, v in values.items()]
    return _over_seeds(pd.DataFrame(per_seed), ["group", "target"])


def attention_summary(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Does the attention track ambiguity? Per seed: the Spearman rank correlation of ā with the vote
    entropy (negative: ambiguous faces get less weight), the mean ā of the clear and the ambiguous third,
    and, where labels were flipped, of flipped and clean faces and their difference; means with a 95 %
    interval over seeds."""
    per_seed = []
    for seed, t in tables.items():
        a, third = t["attention"].to_numpy(), tertile(t["entropy"].to_numpy())
        values = {"Spearman(ā, vote entropy)": float(spearmanr(a, t["entropy"]).statistic),
                  "ā, clear third": float(a[third == "clear"].mean()),
                  "ā, ambiguous third": float(a[third == "ambiguous"].mean())}
        values["ā ambiguous − clear"] = values["ā, ambiguous third"] - values["ā, clear third"]
        if t["flipped"].any():
            fl = t["flipped"].to_numpy()
            values.update({"ā, flipped labels": float(a[fl].mean()), "ā, clean labels": float(a[~fl].mean())})
            values["ā flipped − clean"] = values["ā, flipped labels"] - values["ā, clean labels"]
        per_seed += [dict(seed=seed, quantity=k, value=v) for k, v in values.items()]
    return _over_seeds(pd.DataFrame(per_seed), ["quantity"])


def _verdict(row: pd.Series, below_zero_holds: bool = True) -> str:
    lo, hi = row["ci_lo"], row["ci_hi"]
    if np.isnan(lo):
        return "one seed: no interval"
    if hi < 0:
        return "holds" if below_zero_holds else "does not hold (the opposite is seen)"
    if lo > 0:
        return "does not hold (the opposite is seen)" if below_zero_holds else "holds"
    return "not resolved at this power (the interval contains 0)"


def claims(divergence: pd.DataFrame, attention: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims that SynthFER's votes can test, each with the measured quantity, its 95 %
    interval over seeds and a verdict (``holds`` only when the interval excludes 0 in the claimed direction)."""
    def get(frame, **where):
        sub = frame
        for k, v in where.items():
            sub = sub[sub[k] == v]
        return sub.iloc[0] if len(sub) else None

    items = [
        ("the fused target f is closer to the true label distribution than the label distribution d",
         get(divergence, group="all faces", target="f − d"), True),
        ("the fused target f is closer to the true label distribution than the class distribution D[y]",
         get(divergence, group="all faces", target="f − D[y]"), True),
        ("for ambiguous faces, f is closer to the votes than d",
         get(divergence, group="ambiguous third (vote entropy)", target="f − d"), True),
        ("the attention weight is lower for more ambiguous faces (negative rank correlation)",
         get(attention, quantity="Spearman(ā, vote entropy)"), True),
        ("the attention weight is lower for faces whose label was flipped",
         get(attention, quantity="ā flipped − clean"), True),
    ]
    rows = []
    for claim, row, below in items:
        if row is None:
            rows.append(dict(claim=claim, measured="", verdict="not measured (no such runs)"))
            continue
        interval = "" if np.isnan(row["ci_lo"]) else f" [{row['ci_lo']:+.4f}, {row['ci_hi']:+.4f}]"
        rows.append(dict(claim=claim, measured=f"{row['mean']:+.4f}{interval} over {int(row['seeds'])} seed(s)",
                         verdict=_verdict(row, below)))
    return pd.DataFrame(rows)
