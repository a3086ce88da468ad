"""Face detection and five-point similarity alignment (paper section 4.2; docs/METHOD.md §8.1).

The paper detects every face with MTCNN, maps its five landmarks (eye centres, nose tip, mouth corners)
onto a fixed five-point template with a similarity transform (rotation, uniform scale, translation) and
warps the face to 100x100. SFEW results collapse when this step is skipped, so `adadf align` does it for a
whole folder tree and records what happened to every input in ``dst/manifest.csv``.

Modules (every public name is re-exported here, so ``from adadf_core import align; align.align_folder``)
-------
- `geometry`: `LANDMARK_NAMES`, the templates, `reference_template`, `similarity_to_template`, `align_face`.
- `detectors`: `Face`, the `Detector` protocol, `MTCNNDetector` (TensorFlow only in its child process,
  `_mtcnn_worker`), `LandmarkFileDetector` (recorded landmarks), `make_detector`, `choose_face`,
  `align_detected`.
- `pixels`: `load_rgb` (files, through `adadf_core.data.images.decode_image`), `example_photos`.
- `folder`: `align_folder`, `cli_main`, `list_inputs`, `read_manifest`, `manifest_summary`, and the
  record beside the manifest (`ALIGN_RECORD`, ``alignment.json``: detector, versions, parameters,
  template, `aligned_set_hash`).
- `report`: `landmark_error_report` (detected vs recorded landmarks, SynthFER).
- `walkthrough`: `sfew_like_frames` (unaligned SFEW-style frames from scikit-image's real photographs,
  with reference landmarks; notebook 01's SFEW walk-through).
The figures notebook 01 shows are in `adadf_core.plots` ("alignment" section).

Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner, where
"left" means the left side *of the image* (smaller x), as MTCNN reports them. Nothing here imports torch;
TensorFlow is imported only by the worker process.
"""
from adadf_core.data.align.detectors import (MULTI_FACE_RULES, align_detected, choose_face, Detector, Face,
                                             LandmarkFileDetector, make_detector, mtcnn_available, MTCNNDetector)
from adadf_core.data.align.folder import (ALIGN_RECORD, MANIFEST_COLUMNS, STATUSES, align_folder, aligned_set_hash,
                                          cli_main, list_inputs, manifest_summary, read_manifest)
from adadf_core.data.align.geometry import (LANDMARK_NAMES, align_face, reference_template, similarity_to_template,
                                            TEMPLATE_112x112, TEMPLATE_96x112)
from adadf_core.data.align.pixels import example_photos, load_rgb
from adadf_core.data.align.report import landmark_error_report, LandmarkErrorReport
from adadf_core.data.align.walkthrough import sfew_like_frames

__all__ = [
    "LANDMARK_NAMES", "TEMPLATE_112x112", "TEMPLATE_96x112", "reference_template", "similarity_to_template",
    "align_face",
    "Face", "Detector", "MTCNNDetector", "LandmarkFileDetector", "mtcnn_available", "make_detector",
    "MULTI_FACE_RULES", "choose_face", "align_detected",
    "load_rgb", "example_photos",
    "STATUSES", "MANIFEST_COLUMNS", "ALIGN_RECORD", "aligned_set_hash", "align_folder", "cli_main", "list_inputs", "read_manifest",
    "manifest_summary",
    "LandmarkErrorReport", "landmark_error_report",
    "sfew_like_frames",
]
