"""Decoding and the decoded-image cache.

``cache="memory"`` decodes every image once into one uint8 buffer; ``"mmap"`` writes that buffer to
``<cache_dir>/<key>.npy`` (default cache dir: $ADADF_CACHE or <repo>/data/cache) and memory-maps it (re-used by
later runs; one file per split and stored size); a ``"memory"`` cache above ``MEMORY_CACHE_LIMIT_GB`` is
memory-mapped instead. ``"none"`` decodes on every access (at load every header is read and files cut short
are decoded, so they fail there: `verify_files`). Images are stored after the transform's deterministic resize
when that shrinks them (otherwise at their decoded size), so a cached and an uncached data set return
identical tensors.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from adadf_core.data.images import check_complete, decode_image as _decode_any, decoded_size, ImageDecodeError
from adadf_core.data.labelfiles import DatasetError, DatasetNotFoundError
from adadf_core.data.transforms import FERTransform
from adadf_core.utils.fileio import PROJECT_ROOT
from adadf_core.utils.progress import bar as tqdm


CACHE_MODES = ("memory", "mmap", "none")


# --------------------------------------------------------------------------------------------
# decoded-image store

def decode_image(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB with the project's one decoder (`adadf_core.data.images`: EXIF
    orientation applied, transparency composited on white, 16-bit scaled by 1/257). Raises
    :class:`DatasetError` naming the path."""
    try:
        return _decode_any(path)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"image {path} not found")
    except ImageDecodeError as e:
        raise DatasetError(f"cannot decode image {path}: {e.reason}")


def _clip_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A face box (x, y, w, h) clipped to the image -> PIL crop box (left, top, right, bottom)."""
    x, y, w, h = (int(v) for v in box)
    left, top = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
    return left, top, max(min(x + w, width), left + 1), max(min(y + h, height), top + 1)


def decode_face(path: Path, box=None) -> Image.Image:
    """`decode_image`, cropped to the face box (x, y, w, h; clipped to the image) when one is given."""
    img = decode_image(path)
    return img if box is None else img.crop(_clip_box(box, *img.size))


class ImageStore:
    """uint8 RGB images in one flat buffer (in memory or a memory-mapped .npy) + an [N, 3] index."""

    def __init__(self, buffer: Optional[np.ndarray], index: np.ndarray, mmap_path: Optional[Path] = None):
        self._buffer = buffer
        self.index = index                  # offset, height, width
        self.mmap_path = mmap_path

    @property
    def buffer(self) -> np.ndarray:
        if self._buffer is None:            # re-opened lazily (e.g. in a DataLoader worker)
            self._buffer = np.load(self.mmap_path, mmap_mode="r")
        return self._buffer

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.index[i])
        return np.asarray(self.buffer[off:off + h * w * 3]).reshape(h, w, 3)

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.mmap_path is not None:
            state["_buffer"] = None         # never pickle a memory map's contents
        return state

    @property
    def nbytes(self) -> int:
        return int(self.index[-1, 0] + self.index[-1, 1] * self.index[-1, 2] * 3) if len(self.index) else 0


def default_cache_dir() -> Path:
    env = os.environ.get("ADADF_CACHE")
    return Path(env) if env else PROJECT_ROOT / "data" / "cache"


# Above this many bytes a "memory" cache is memory-mapped from a file in the cache folder instead
# (AffectNet at 224 px would need about 43 GB of RAM); ADADF_MEMORY_CACHE_GB overrides it.
MEMORY_CACHE_LIMIT_GB = 8.0


def memory_cache_limit() -> int:
    return int(float(os.environ.get("ADADF_MEMORY_CACHE_GB", MEMORY_CACHE_LIMIT_GB)) * 2**30)


def _store_sizes(paths: Sequence[Path], transform, boxes: Optional[np.ndarray] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Stored (height, width) per image and whether the transform's resize is applied before storing.
    Reads every image's header, so a file that is missing or not an image fails here, naming it."""
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    pre_done = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        try:
            w, h = decoded_size(p)               # after EXIF rotation, as the decoder returns it
        except FileNotFoundError:
            raise DatasetNotFoundError(f"image {p} not found")
        except ImageDecodeError as e:
            raise DatasetError(f"cannot decode image {p}: {e.reason}")
        if boxes is not None:
            left, top, right, bottom = _clip_box(boxes[i], w, h)
            w, h = right - left, bottom - top
        if isinstance(transform, FERTransform):
            pw, ph = transform.pre_size(w, h)
            if pw * ph < w * h:
                w, h, pre_done[i] = pw, ph, True
        sizes[i] = (h, w)
    return sizes, pre_done


def _cache_key(paths: Sequence[Path], sizes: np.ndarray, pre_done: np.ndarray, transform,
               boxes: Optional[np.ndarray]) -> str:
    """What a cache file holds: these files (path, size, mtime) decoded at these stored sizes. The
    resize enters the key only when it was applied before storing, so runs at different image sizes
    that store the images as decoded share one file."""
    return hashlib.sha1(json.dumps(dict(
        paths=[str(Path(p).resolve()) for p in paths],
        stat=[(st.st_size, st.st_mtime_ns) for st in map(os.stat, paths)],
        sizes=sizes.tolist(), pre=pre_done.tolist(),
        pre_repr=repr(getattr(transform, "pre", None)) if pre_done.any() else None,
        boxes=None if boxes is None else np.asarray(boxes).tolist(),
    )).encode()).hexdigest()[:20]


def verify_files(paths: Sequence[Path], boxes: Optional[np.ndarray]) -> None:
    """Without a cache, at load rather than mid-epoch: every header is read (`_store_sizes`) and every
    JPEG / PNG that lacks its end marker (`images.check_complete`) is decoded, so a file cut short fails
    here, naming it (a file with data after its end marker decodes and passes)."""
    _store_sizes(paths, None, boxes)
    for p in paths:
        try:
            check_complete(p)
        except ImageDecodeError:
            decode_image(p)


def build_store(paths: Sequence[Path], transform, mode: str, cache_dir: Optional[Path] = None,
                progress: bool = True, desc: str = "decoding", boxes: Optional[np.ndarray] = None
                ) -> tuple[ImageStore, np.ndarray]:
    """Decode every image once (cropped to ``boxes`` when given). Returns the store and the per-image
    flag 'resize already applied'. A ``"memory"`` store larger than `memory_cache_limit` is
    memory-mapped instead; with ``progress`` the size and place of the cache are printed."""
    sizes, pre_done = _store_sizes(paths, transform, boxes)
    offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1] * 3)])
    index = np.stack([offsets[:-1], sizes[:, 0], sizes[:, 1]], axis=1).astype(np.int64)
    total = int(offsets[-1])
    if mode == "memory" and total > memory_cache_limit():
        mode = "mmap"
        note = f" (over the {memory_cache_limit() / 2**30:.1f} GiB memory-cache limit, ADADF_MEMORY_CACHE_GB)"
    else:
        note = ""
    key = _cache_key(paths, sizes, pre_done, transform, boxes)
    known = mode == "memory" and key in _DECODED
    target = None
    if mode == "mmap":
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        target = cache_dir / f"images-{key}.npy"
    if progress:
        where = (f"memory-mapped from {target}{note}" if target is not None else
                 "in memory (decoded earlier in this process)" if known else "in memory")
        print(f"{desc}: decoded-image cache of {len(paths)} images, {total / 2**20:,.1f} MiB, {where}")
    if known:
        _DECODED.move_to_end(key)
        return _DECODED[key], pre_done.copy()
    if target is not None:
        if target.exists():
            return ImageStore(None, index, target), pre_done
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        buffer = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total,))
    else:
        buffer = np.empty(total, dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, disable=not progress, leave=False)):
        img = decode_face(p, None if boxes is None else boxes[i])
        if pre_done[i]:
            img = transform.pre(img)
        arr = np.asarray(img, dtype=np.uint8)
        if arr.shape != (sizes[i, 0], sizes[i, 1], 3):
            raise DatasetError(f"image {p} decoded to shape {arr.shape}, expected {tuple(sizes[i])} + (3,)")
        buffer[offsets[i]:offsets[i + 1]] = arr.reshape(-1)
    if target is not None:
        buffer.flush()
        del buffer
        os.replace(tmp, target)
        return ImageStore(None, index, target), pre_done
    buffer.flags.writeable = False           # shared by every data set built from it (`_remember`)
    return _remember(key, ImageStore(buffer, index)), pre_done


# Decoded in-memory stores of this process by `_cache_key` (the files' path, size and mtime, the stored sizes,
# the resize): a study's runs in one process (a notebook's kernel) decode each split once, not once a run.
# Read-only, least recently used first out, within half the memory-cache limit.
_DECODED: "collections.OrderedDict[str, ImageStore]" = collections.OrderedDict()


def _remember(key: str, store: ImageStore) -> ImageStore:
    _DECODED[key] = store
    budget = memory_cache_limit() // 2
    while _DECODED and sum(s.nbytes for s in _DECODED.values()) > budget:
        _DECODED.popitem(last=False)
    return store
