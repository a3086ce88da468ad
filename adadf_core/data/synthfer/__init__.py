"""SynthFER: an embedded facial-expression data set with known, controllable label ambiguity.

Every face has a latent expression mixture ``p`` over the seven RAF-DB classes; K simulated annotators
vote labels drawn from ``p`` (with annotator noise); the vote proportions are the ground-truth label
distribution and the majority vote is the hard label (``annotators.py`` says exactly how). The face is
rendered from ``p``: its expression geometry is the ``p``-weighted blend of per-class prototypes. Each
face is drawn twice from the same parameters: an aligned 100x100 crop and an unaligned photo-sized
image (random rotation, scale and offset) with its five landmarks.

The files follow the RAF-DB layout (see docs/ARCHITECTURE.md, "SynthFER on disk"), so the RAF-DB
loader reads a SynthFER root unchanged. Same parameters and seed => byte-identical files.

Modules: ``annotators`` (the ground truth: latent mixture, annotators, votes, majority label),
``params`` (defaults and validation), ``faces`` (per-face parameters), ``render`` (painting, one
function per facial part), ``frames`` (aligned crop, original image, landmarks, warping),
``files`` (generate / ensure / the tables / the command line). The figure of samples per class is
``plots.synthfer_samples``.
"""
from adadf_core.data.synthfer.annotators import CLASS_NAMES, RAF_TRAIN_COUNTS, sample_labels
from adadf_core.data.synthfer.faces import EXPR_DIMS, PROTOTYPES, face_params
from adadf_core.data.synthfer.frames import ALIGNED_HALF_EXTENT, landmarks_canonical
from adadf_core.data.synthfer.params import DEFAULTS, SynthFERError, _normalise_params  # noqa: F401 (_normalise_params: tests)
from adadf_core.data.synthfer.render import face_layer
from adadf_core.data.synthfer.files import GENERATOR_VERSION, JPEG_QUALITY, cli_main, default_root, ensure, generate

__all__ = ["ALIGNED_HALF_EXTENT", "CLASS_NAMES", "DEFAULTS", "EXPR_DIMS", "GENERATOR_VERSION", "JPEG_QUALITY",
           "PROTOTYPES", "RAF_TRAIN_COUNTS", "SynthFERError", "cli_main", "default_root", "ensure",
           "face_layer", "face_params", "generate", "landmarks_canonical", "sample_labels"]
