"""SynthFER's ground truth: latent expression mixtures, simulated annotators, votes, majority labels.

What "ground-truth label distribution" means on SynthFER, per face (C = 7 classes, RAF-DB order):

1. **Dominant class.** ``d ~ Categorical(class_counts / sum)``; by default ``class_counts`` are RAF-DB's
   training-set counts, so SynthFER has RAF-DB's class imbalance (Happiness most frequent, Fear least).
2. **Latent expression mixture** ``p = (1 - w) * onehot(d) + w * q``, with admixture
   ``q ~ Dirichlet(dirichlet_alpha, ..., dirichlet_alpha)`` and weight ``w = ambiguity * Beta(2, 1.5)``.
   ``ambiguity = 0`` gives pure expressions; the default 0.8 gives many blended ones. The renderer draws
   the face from ``p`` (its geometry is the ``p``-weighted blend of per-class prototypes, ``faces.py``),
   so ``p`` is what the image shows. ``p`` is written as ``latent_<class>`` in ``distribution.csv``.
3. **Annotators.** ``K ~ Uniform{annotators[0], ..., annotators[1]}`` (default 10 to 40) annotators each
   vote once. An annotator reads the face right with probability ``1 - annotator_noise`` (votes from
   ``p``) and otherwise votes uniformly at random: each vote comes from ``(1 - eta) * p + eta / C``.
   The vote counts are ``Multinomial(K, (1 - eta) * p + eta / C)``.
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


def sample_labels(n: int, rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    """Latent mixtures, annotator votes and majority labels for ``n`` faces (vectorised).

    Returns ``latent`` [n, C] (the mixture ``p``), ``votes`` [n, C] (counts), ``k`` [n] (annotators),
    ``label`` [n] (majority vote) and ``dominant`` [n] (argmax of ``latent``: usually, not always, the
    drawn dominant class, since the admixture weight can exceed one half).
    """
    c = len(CLASS_NAMES)
    freq = np.asarray(params["class_counts"], dtype=np.float64)
    dominant = rng.choice(c, size=n, p=freq / freq.sum())
    weight = params["ambiguity"] * rng.beta(2.0, 1.5, size=n)
    admix = rng.dirichlet([params["dirichlet_alpha"]] * c, size=n)
    latent = (1.0 - weight)[:, None] * np.eye(c)[dominant] + weight[:, None] * admix
    lo, hi = params["annotators"]
    k = rng.integers(lo, hi + 1, size=n)
    eta = params["annotator_noise"]
    votes = rng.multinomial(k, (1.0 - eta) * latent + eta / c)
    # majority vote; ties go to the class with the larger latent weight
    label = np.argmax(votes + 1e-3 * latent, axis=1)
    return dict(latent=latent, votes=votes, k=k, label=label, dominant=latent.argmax(1))
