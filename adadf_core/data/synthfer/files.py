"""Writing SynthFER to disk: the RAF-DB layout, ``distribution.csv``, ``landmarks.csv``, ``synthfer.json``.

``generate`` draws each split's ground truth (``annotators.sample_labels``), face parameters
(``faces.face_params``) and original-image geometry (``frames.original_geometry``) from one seeded
generator, renders the faces in fixed batches (``render``), and writes everything into a temporary
folder that is renamed into place when complete. Same parameters and seed => byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from adadf_core.data.synthfer.annotators import CLASS_NAMES, sample_labels
from adadf_core.data.synthfer.faces import face_params
from adadf_core.data.synthfer.frames import (ALIGNED_HALF_EXTENT, aligned_grid, canonical_to_pixel,
                                               landmarks_canonical, original_axes, original_geometry, warp_layer)
from adadf_core.data.synthfer.annotators import AMBIGUITY_MODELS
from adadf_core.data.synthfer.params import (DEFAULTS, _normalise_params, check_ambiguity_model, recorded_params,
                                             SynthFERError)
from adadf_core.data.synthfer.render import background, columns, edge_width, face_layer, finish
from adadf_core.utils.fileio import PROJECT_ROOT
from adadf_core.utils.progress import bar as tqdm

GENERATOR_VERSION = 2
JPEG_QUALITY = 92
_BATCH = 64                   # rendering batch (fixed: part of the deterministic recipe)


def default_root(ambiguity_model: Optional[str] = None) -> Path:
    """``<data>/synthfer-<model>``: ``<data>`` is ``$ADADF_DATA`` when set, else ``<repo>/data``; the model is
    ``ambiguity_model`` (default: ``DEFAULTS``' structured), so each model's default copy has its own folder."""
    env = os.environ.get("ADADF_DATA")
    base = Path(env) if env else PROJECT_ROOT / "data"
    return base / f"synthfer-{check_ambiguity_model(ambiguity_model or DEFAULTS['ambiguity_model'])}"


def _split_names(split: str, n: int) -> list[str]:
    width = max(5 if split == "train" else 4, len(str(n)))
    return [f"{split}_{i + 1:0{width}d}" for i in range(n)]


def _generate_split(split: str, n: int, params: dict, out: Path, progress: bool) -> dict:

    code = 0 if split == "train" else 1
    rng = np.random.default_rng(np.random.SeedSequence([params["seed"], code, 0]))
    lab = sample_labels(n, rng, params)
    f = face_params(n, rng, lab["latent"], params)
    geo = original_geometry(n, rng, params)
    names = _split_names(split, n)
    landmarks = canonical_to_pixel(landmarks_canonical(f), geo, np.arange(n))
    size = params["image_size"]
    ax, ay, apix = aligned_grid(size)
    ax, ay = ax.astype(np.float32), ay.astype(np.float32)
    for b0 in tqdm(range(0, n, _BATCH), desc=f"SynthFER {split}", disable=not progress, leave=False):
        idx = np.arange(b0, min(n, b0 + _BATCH))
        c = columns({k: v[idx] for k, v in f.items()})
        rng_b = np.random.default_rng(np.random.SeedSequence([params["seed"], code, 1 + b0 // _BATCH]))
        face, alpha = face_layer(c, ax, ay, edge_width(c, apix))
        bg = background(c, ax[:, :1, :], ay[:, :, :1])
        aligned = finish(bg * (1 - alpha[..., None]) + face, c, rng_b)
        canvas = int(geo["size"][idx].max())
        ou, ov = original_axes(geo, idx, canvas)
        # the light turns with the face: in image axes its direction is light_angle + rotation
        bg = background(c, ou, ov, geo["angle"][idx].astype(np.float32)[:, None, None])
        warped = warp_layer(face, alpha, geo, idx, canvas, size)
        original = finish(bg * (1 - warped[..., 3:]) + warped[..., :3], c, rng_b)
        for j, i in enumerate(idx):
            Image.fromarray(aligned[j]).save(out / "Image" / "aligned" / f"{names[i]}_aligned.jpg",
                                             quality=JPEG_QUALITY)
            s = int(geo["size"][i])
            Image.fromarray(original[j, :s, :s]).save(out / "Image" / "original" / f"{names[i]}.jpg",
                                                      quality=JPEG_QUALITY)
    return dict(names=names, lab=lab, landmarks=landmarks, sizes=geo["size"])


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def _write_tables(out: Path, splits: list[tuple[str, dict]]) -> None:
    emo = out / "EmoLabel"
    lines, dist, marks = [], [], []
    dist.append(",".join(["name", "votes"] + [f"p_{c}" for c in CLASS_NAMES] + [f"latent_{c}" for c in CLASS_NAMES]))
    marks.append("name,width,height,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,"
                 "mouth_left_x,mouth_left_y,mouth_right_x,mouth_right_y")
    for _, r in splits:
        lab = r["lab"]
        for i, stem in enumerate(r["names"]):
            name = f"{stem}.jpg"
            lines.append(f"{name} {int(lab['label'][i]) + 1}")
            votes = lab["votes"][i]
            props = votes / votes.sum()
            dist.append(",".join([name, str(int(votes.sum()))] + [_fmt(v) for v in props]
                                 + [_fmt(v) for v in lab["latent"][i]]))
            s = int(r["sizes"][i])
            marks.append(",".join([name, str(s), str(s)] + [f"{v:.2f}" for v in r["landmarks"][i].ravel()]))
    (emo / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    (emo / "distribution.csv").write_text("\n".join(dist) + "\n")
    (emo / "landmarks.csv").write_text("\n".join(marks) + "\n")


def _record(p: dict, splits: list[tuple[str, dict]]) -> dict:
    """The contents of ``synthfer.json``: version, parameters, per-split counts and disagreement shares."""
    meta = dict(version=GENERATOR_VERSION, params=recorded_params(p), class_names=CLASS_NAMES, jpeg_quality=JPEG_QUALITY,
                aligned_half_extent=ALIGNED_HALF_EXTENT)
    total_dis, total = 0, 0
    for s, r in splits:
        lab = r["lab"]
        dis = int((lab["label"] != lab["dominant"]).sum())
        total_dis += dis
        total += len(r["names"])
        meta[s] = dict(count=len(r["names"]),
                       class_counts={c: int((lab["label"] == i).sum()) for i, c in enumerate(CLASS_NAMES)},
                       disagreement_share=dis / len(r["names"]),
                       mean_votes=float(lab["k"].mean()))
    meta["disagreement_share"] = total_dis / total
    meta["disagreement_definition"] = ("share of images whose majority-vote label differs from the argmax "
                                       "of their latent expression mixture")
    return meta


def generate(root: str | Path, n_train: int = DEFAULTS["n_train"], n_test: int = DEFAULTS["n_test"], seed: int = 0,
             ambiguity: Optional[float] = None, annotators: Sequence[int] = (10, 40),
             image_size: int = 100, progress: bool = True, **params) -> dict:
    """Write SynthFER to ``root`` and return the contents of its ``synthfer.json``.

    Idempotent: when ``root/synthfer.json`` records the same parameters, nothing is written.
    A non-empty ``root`` holding anything else raises :class:`SynthFERError` (nothing is overwritten).
    Extra keyword parameters: see ``DEFAULTS`` (annotator_noise, intensity, noise_std, blur, ...).
    """
    root = Path(root)
    p = recorded_params(_normalise_params(dict(params, n_train=n_train, n_test=n_test, seed=seed,
                                               ambiguity=ambiguity, annotators=annotators, image_size=image_size)))
    meta_path = root / "synthfer.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SynthFERError(f"{meta_path} is not a readable SynthFER record ({e}); delete {root} to regenerate")
        if meta.get("params") == p and meta.get("version") == GENERATOR_VERSION:
            return dict(meta, seconds=0.0)
        model = {"ambiguity_model": "unstructured"}        # what a record without the key means
        recorded = dict(model, **(meta.get("params") or {}), version=meta.get("version"))
        asked = dict(model, **p, version=GENERATOR_VERSION)
        diff = {k: (recorded.get(k), asked[k]) for k in asked if recorded.get(k) != asked[k]}
        raise SynthFERError(f"{root} already holds a SynthFER with different parameters or generator version "
                            f"(recorded vs asked: {diff}); choose another root or delete that folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SynthFERError(f"{root} exists and is not an empty folder or a SynthFER root (no synthfer.json); "
                            "refusing to overwrite it: choose another root or delete it")
    start = time.time()
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in ("EmoLabel", "Image/aligned", "Image/original"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        splits = [(s, _generate_split(s, p[f"n_{s}"], p, tmp, progress)) for s in ("train", "test")]
        _write_tables(tmp, splits)
        meta = _record(p, splits)
        # written last: a root without it is incomplete. No timings in it: same seed => same bytes.
        (tmp / "synthfer.json").write_text(json.dumps(meta, indent=2) + "\n")
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(meta, seconds=round(time.time() - start, 2))


def ensure(root: Optional[str | Path] = None, **params) -> Path:
    """Generate SynthFER at ``root`` (default :func:`default_root`) unless it is already there; return root."""
    root = Path(root) if root is not None else default_root(params.get("ambiguity_model"))
    generate(root, **params)
    return root


def cli_main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="adadf generate-synthfer", description="write the SynthFER data set")
    ap.add_argument("--out", default=None, help="output root (default: %s, or -unstructured)" % default_root())
    ap.add_argument("--n-train", type=int, default=DEFAULTS["n_train"], help="training faces")
    ap.add_argument("--n-test", type=int, default=DEFAULTS["n_test"], help="test faces")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (the study uses 0)")
    ap.add_argument("--ambiguity-model", default=DEFAULTS["ambiguity_model"], choices=AMBIGUITY_MODELS,
                    help="how faces are ambiguous: unstructured (every class confused with every other alike) or "
                         "structured (per-class confusions calibrated to FERPlus's crowd votes)")
    ap.add_argument("--ambiguity", type=float, default=None,
                    help="how ambiguous faces are, 0 = pure expressions (default: the model's own, 0.8 unstructured, "
                         "1.0 structured = the calibrated level)")
    ap.add_argument("--annotators", type=int, nargs=2, default=list(DEFAULTS["annotators"]), metavar=("MIN", "MAX"),
                    help="annotators per face, drawn between MIN and MAX")
    ap.add_argument("--annotator-noise", type=float, default=None,
                    help="share of votes cast at random (default: the model's own, 0.1 unstructured, 0.03 structured)")
    ap.add_argument("--image-size", type=int, default=DEFAULTS["image_size"], help="aligned crop size in pixels")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    root = Path(a.out) if a.out else default_root(a.ambiguity_model)
    try:
        meta = generate(root, n_train=a.n_train, n_test=a.n_test, seed=a.seed, ambiguity=a.ambiguity,
                        ambiguity_model=a.ambiguity_model,
                        annotators=a.annotators, image_size=a.image_size, annotator_noise=a.annotator_noise,
                        progress=not a.no_progress)
    except SynthFERError as e:
        print(f"adadf generate-synthfer: {e}", file=sys.stderr)
        return 2
    print(f"SynthFER at {root} (seed {meta['params']['seed']}, generated in {meta['seconds']} s)")
    for split in ("train", "test"):
        m = meta[split]
        counts = ", ".join(f"{c} {n}" for c, n in m["class_counts"].items())
        print(f"  {split}: {m['count']} images; {counts}; "
              f"majority vote != dominant latent class: {m['disagreement_share']:.1%}")
    print(f"  disagreement share overall: {meta['disagreement_share']:.1%}")
    return 0

