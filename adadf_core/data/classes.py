"""The data sets' names and class orders (docs/METHOD.md §8): the one place each label order is written."""
from __future__ import annotations

from typing import Optional


RAF_CLASSES = ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
AFFECTNET_CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
SFEW_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
CLASS_NAMES: dict[str, Optional[list[str]]] = {
    "synthfer": RAF_CLASSES, "raf": RAF_CLASSES, "affectnet7": AFFECTNET_CLASSES[:7],
    "affectnet8": AFFECTNET_CLASSES, "sfew": SFEW_CLASSES, "imagefolder": None,   # from the folders
}
DATASET_NAMES = tuple(CLASS_NAMES)
