"""SynthFER's ground truth: latent expression mixtures, simulated annotators, votes, majority labels.

What "ground-truth label distribution" means on SynthFER, per face (C = 7 classes, RAF-DB order):

1. **Dominant class.** ``d ~ Categorical(class_counts / sum)``; by default ``class_counts`` are RAF-DB's
   training-set counts, so SynthFER has RAF-DB's class imbalance (Happiness most frequent, Fear least).
2. **Latent expression mixture** ``p = (1 - w) * onehot(d) + w * q``: an admixture ``q`` over the other
   classes with weight ``w``. Two ambiguity models (parameter ``ambiguity_model``) say how ``w`` and ``q``
   are drawn:

   * ``unstructured`` (generator version 2's only model): ``q ~ Dirichlet(dirichlet_alpha, ...)`` over all
     classes, unrelated to ``d``, and ``w = ambiguity * Beta(2, 1.5)`` (``ambiguity`` 0.8 by default). Every
     class is confused with every other alike.
   * ``structured`` (calibrated to FERPlus's crowd votes, ``calibration.py``): ``q ~ Dirichlet(ADMIX_CONCENTRATION
     * CONFUSION[d])`` over the classes other than ``d``, so each class has its own partners (Fear with Surprise,
     Sadness with Neutral, Disgust with Anger, Neutral and Sadness), and ``w ~ Beta(m * WEIGHT_CONCENTRATION,
     (1 - m) * WEIGHT_CONCENTRATION)`` with class mean ``m = ambiguity * MEAN_WEIGHT[d]`` (``ambiguity`` 1.0 by
     default: the calibrated level; Happiness is the least ambiguous class, Disgust the most).

   ``ambiguity = 0`` gives pure expressions under both. The renderer draws the face from ``p`` (its
   geometry is the ``p``-weighted blend of per-class prototypes, ``faces.py``), so ``p`` is what the image
   shows. ``p`` is written as ``latent_<class>`` in ``distribution.csv``.
3. **Annotators.** ``K ~ Uniform{annotators[0], ..., annotators[1]}`` (default 10 to 40) annotators each
   vote once. An annotator reads the face right with probability ``1 - annotator_noise`` (votes from
   ``p``) and otherwise votes uniformly at random: each vote comes from ``(1 - eta) * p + eta / C``.
   The vote counts are ``Multinomial(K, (1 - eta) * p + eta / C)``. ``annotator_noise`` defaults to the
   model's own value (0.1 unstructured, 0.03 structured: part of the calibration).
4. **Ground-truth label distribution** = the vote proportions ``votes / K`` (``p_<class>`` and ``votes``
   in ``distribution.csv``): what RAF-DB's crowd-sourced distributions are, with the latent ``p`` known
   too. The data loader reads these proportions as the ground truth.
5. **Hard label** = the majority vote (``list_patition_label.txt``); ties go to the class with the larger
   latent weight. The hard label differs from the latent argmax for a share of faces (label ambiguity
   plus annotator noise); ``synthfer.json`` records that share as ``disagreement_share``.

All of this is vectorised over ``n`` faces and uses only the given generator ``rng``.
"""
from __future__ import annotations

import numpy as np

from adadf_core.data.classes import RAF_CLASSES

CLASS_NAMES = RAF_CLASSES          # SynthFER is labelled in RAF-DB's order
RAF_TRAIN_COUNTS = (1290, 281, 717, 4772, 1982, 705, 2524)
AMBIGUITY_MODELS = ("unstructured", "structured")
# each model's own ambiguity and annotator noise (used where the parameter is not given)
MODEL_DEFAULTS = {"unstructured": dict(ambiguity=0.8, annotator_noise=0.1),
                  "structured": dict(ambiguity=1.0, annotator_noise=0.03)}

# The structured model's constants, fitted by simulation (``calibration.fit_structured``) so that 10 votes per
# face reproduce FERPlus's per-class vote shares and main confusions (``calibration.FERPLUS``).
# MEAN_WEIGHT[d]: mean admixture weight of a face whose dominant class is d, in RAF-DB order.
MEAN_WEIGHT = (0.255, 0.378, 0.591, 0.066, 0.311, 0.267, 0.214)
WEIGHT_CONCENTRATION = 4.0        # Beta(m * 4, (1 - m) * 4): the spread of w around its class mean
ADMIX_CONCENTRATION = 10.0        # Dirichlet(10 * CONFUSION[d]): how closely q follows its class's row
# CONFUSION[d]: where class d's admixture goes (rows sum to 1 up to rounding, zero on the diagonal).
CONFUSION = (
    # Surp   Fear   Disg   Happ   Sad    Anger  Neutral
    (0.000, 0.449, 0.115, 0.109, 0.113, 0.109, 0.105),   # Surprise
    (0.564, 0.000, 0.102, 0.096, 0.083, 0.080, 0.074),   # Fear
    (0.029, 0.031, 0.000, 0.032, 0.262, 0.348, 0.297),   # Disgust
    (0.168, 0.165, 0.171, 0.000, 0.169, 0.162, 0.166),   # Happiness
    (0.055, 0.052, 0.030, 0.052, 0.000, 0.032, 0.779),   # Sadness
    (0.183, 0.188, 0.049, 0.190, 0.083, 0.000, 0.307),   # Anger
    (0.090, 0.091, 0.068, 0.091, 0.599, 0.061, 0.000),   # Neutral
)


def _unstructured_mixture(dominant: np.ndarray, rng: np.random.Generator, params: dict) -> np.ndarray:
    c, n = len(CLASS_NAMES), len(dominant)
    weight = params["ambiguity"] * rng.beta(2.0, 1.5, size=n)
    admix = rng.dirichlet([params["dirichlet_alpha"]] * c, size=n)
    return (1.0 - weight)[:, None] * np.eye(c)[dominant] + weight[:, None] * admix


def _structured_mixture(dominant: np.ndarray, rng: np.random.Generator, params: dict) -> np.ndarray:
    c, n = len(CLASS_NAMES), len(dominant)
    # the constants can be overridden (calibration.fit_structured does, while fitting them)
    mean_weight = np.asarray(params.get("structured_mean_weight", MEAN_WEIGHT), dtype=np.float64)
    mean = np.clip(params["ambiguity"] * mean_weight[dominant], 1e-3, 0.999)
    weight = rng.beta(mean * WEIGHT_CONCENTRATION, (1.0 - mean) * WEIGHT_CONCENTRATION)
    weight = weight * (params["ambiguity"] > 0)
    rows = np.asarray(params.get("structured_confusion", CONFUSION), dtype=np.float64)
    rows = rows / rows.sum(1, keepdims=True)
    shape = ADMIX_CONCENTRATION * rows[dominant]
    every = np.arange(n)
    shape[every, dominant] = 1.0            # drawn and then dropped: q has no mass on d
    gamma = rng.gamma(shape)
    gamma[every, dominant] = 0.0
    admix = gamma / gamma.sum(1, keepdims=True)
    return (1.0 - weight)[:, None] * np.eye(c)[dominant] + weight[:, None] * admix


def sample_labels(n: int, rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    """Latent mixtures, annotator votes and majority labels for ``n`` faces (vectorised).

    Returns ``latent`` [n, C] (the mixture ``p``), ``votes`` [n, C] (counts), ``k`` [n] (annotators),
    ``label`` [n] (majority vote) and ``dominant`` [n] (argmax of ``latent``: usually, not always, the
    drawn dominant class, since the admixture weight can exceed one half).
    """
    c = len(CLASS_NAMES)
    freq = np.asarray(params["class_counts"], dtype=np.float64)
    dominant = rng.choice(c, size=n, p=freq / freq.sum())
    model = params.get("ambiguity_model", "unstructured")
    mixture = _structured_mixture if model == "structured" else _unstructured_mixture
    latent = mixture(dominant, rng, params)
    lo, hi = params["annotators"]
    k = rng.integers(lo, hi + 1, size=n)
    eta = params["annotator_noise"]
    votes = rng.multinomial(k, (1.0 - eta) * latent + eta / c)
    # majority vote; ties go to the class with the larger latent weight
    label = np.argmax(votes + 1e-3 * latent, axis=1)
    return dict(latent=latent, votes=votes, k=k, label=label, dominant=latent.argmax(1))
