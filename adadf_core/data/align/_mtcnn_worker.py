"""MTCNN face detection, run inside its own process.

TensorFlow (which the `mtcnn` package needs) must never share a process with torch: with some
TensorFlow releases, importing it before torchvision/timm crashes the interpreter.
`align.MTCNNDetector` (in `align/detectors.py`) therefore starts
``python -m adadf_core.data.align._mtcnn_worker --serve`` as a child process (a plain subprocess, not
multiprocessing, so scripts without an ``if __name__ == "__main__"`` guard work too) and talks to it over
its stdin/stdout with pickled messages:

    parent -> child   ("detect", [RGB uint8 arrays])   |  ("quit", None)
    child -> parent   ("ready", versions) once after start-up, then ("ok", [float arrays [k, 15]])
                      or ("error", traceback text) per request

The child moves anything TensorFlow prints on stdout to stderr so the message stream stays clean. It
keeps one MTCNN instance alive, so TensorFlow's start-up cost (several seconds) is paid once per
`MTCNNDetector`, not once per image. Nothing here imports torch; nothing else in `adadf_core` imports
TensorFlow.

For debugging it can also be run by hand:

    python -m adadf_core.data.align._mtcnn_worker photo1.jpg photo2.png     # prints the detections as JSON
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from importlib.metadata import version

import numpy as np

from adadf_core.data.images import decode_image

_DETECTOR = None
_KWARGS: dict = {}

# Columns of one detection row returned by `detect_batch`.
ROW_COLUMNS = ("x1", "y1", "x2", "y2", "confidence",
               "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
               "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y")


def init(device: str = "CPU:0", min_face_size: int = 20,
         thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)) -> None:
    """Import TensorFlow and build the MTCNN networks (weights ship with the `mtcnn` package)."""
    global _DETECTOR, _KWARGS
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow is imported only in this worker process
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not device.upper().startswith("GPU"):
        # Keep TensorFlow off the GPU entirely so it never grabs memory torch is using.
        if gpus:
            tf.config.set_visible_devices([], "GPU")
    else:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    # TensorFlow is imported only in this worker process
    from mtcnn import MTCNN

    _DETECTOR = MTCNN(device=device)
    _KWARGS = {"min_face_size": int(min_face_size), "threshold_pnet": float(thresholds[0]),
               "threshold_rnet": float(thresholds[1]), "threshold_onet": float(thresholds[2])}


def detect_batch(images: list[np.ndarray]) -> list[np.ndarray]:
    """Detect faces in RGB uint8 images [H, W, 3]; one float array [k, 15] per image (`ROW_COLUMNS`).

    MTCNN pads a batch to its largest image, so images are grouped by shape and each group is one call.
    """
    if _DETECTOR is None:
        init()
    results: list[np.ndarray] = [np.empty((0, len(ROW_COLUMNS)))] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for indices in groups.values():
        batch = [np.ascontiguousarray(images[i]) for i in indices]
        rows = _DETECTOR.detect_faces(batch, output_type="numpy", box_format="xyxy", **_KWARGS)
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 16)
        # mtcnn's raw rows are [image, x1, y1, x2, y2, score, x of the 5 points, y of the 5 points]
        # (see mtcnn.utils.landmarks.parse_landmarks, which rounds them to ints; we keep the floats).
        xs, ys = rows[:, 6:11], rows[:, 11:16]
        points = np.stack([xs, ys], axis=-1).reshape(-1, 10)          # x, y interleaved per point
        ours = np.concatenate([rows[:, 1:6], points], axis=1)
        for local, i in enumerate(indices):
            results[i] = ours[rows[:, 0] == local].copy()
    return results


def serve(options: dict) -> int:
    """The message loop run by ``--serve`` (see the module docstring)."""
    channel = os.fdopen(os.dup(1), "wb")        # the real stdout carries messages only ...
    os.dup2(2, 1)                                # ... and anything printed goes to stderr
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer

    def send(message) -> None:
        pickle.dump(message, channel, protocol=pickle.HIGHEST_PROTOCOL)
        channel.flush()

    try:
        init(**options)

        # TensorFlow is imported only in this worker process
        import tensorflow as tf
        send(("ready", {"tensorflow": tf.__version__, "mtcnn": version("mtcnn")}))
    except BaseException:
        send(("error", traceback.format_exc()))
        return 1
    while True:
        try:
            op, payload = pickle.load(requests)
        except EOFError:
            return 0
        if op == "quit":
            return 0
        try:
            send(("ok", detect_batch(payload)))
        except Exception:
            send(("error", traceback.format_exc()))


def main(argv: list[str] | None = None) -> int:

    paths = list(sys.argv[1:] if argv is None else argv)
    if paths[:1] == ["--serve"]:
        return serve(json.loads(paths[1]) if len(paths) > 1 else {})
    if not paths:
        print("usage: python -m adadf_core.data.align._mtcnn_worker IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    images = [np.asarray(decode_image(p)) for p in paths]
    init()
    for path, rows in zip(paths, detect_batch(images)):
        faces = [dict(zip(ROW_COLUMNS, map(float, row))) for row in rows]
        print(json.dumps({"image": path, "faces": faces}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
