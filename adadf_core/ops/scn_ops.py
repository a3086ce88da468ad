"""SCN: Self-Cure Network (Wang et al., CVPR 2020), re-implemented on the shared ResNet-18 trainer.

From docs/METHOD.md §12:

* the model is a single ResNet with an attention head alpha_i = sigmoid(Linear(f_i)) that multiplies the
  logits (bias included): the "logit-weighted cross-entropy" is plain CE on the alpha-scaled logits;
* loss = CE(alpha z, y_cur[i]) + rank_regularization(alpha, ratio 0.7, margin delta_1) with unit weights;
  delta_1 = ``cfg.rr_margin`` (0.07 in both profiles: SCN's README value for batch 64; the paper's 0.15 was
  for batch 1024);
* relabelling: from epoch ``cfg.scn_relabel_epoch`` (1-based, 10 in the code) on, after the optimizer step,
  P = softmax(alpha z) of the pre-step forward pass; if max_c P_c - P_y > delta_2 (0.2) the stored label
  becomes argmax_c P_c. The new label is used the next time the sample is drawn. Scope ``all`` (code: any
  sample in the batch) or ``low`` (paper: only the low-importance group, i.e. samples outside the top
  floor(0.7 B) attention values).

Pure tensor functions: :func:`scn_relabel`, :func:`low_importance_mask`. The training method that composes
them is ``methods/scn.py``.
"""
from __future__ import annotations

from typing import Optional

import torch

SCOPES = ("all", "low")


def low_importance_mask(attention: torch.Tensor, ratio: float = 0.7) -> torch.Tensor:
    """Bool [B]: True for samples outside the top floor(ratio * B) attention values (SCN's low group).

    Ties are broken by ``torch.sort`` order (descending, stable), the same grouping as rank regularisation.
    """
    if attention.dim() != 1:
        raise ValueError(f"attention must be [B], got shape {tuple(attention.shape)}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    b = attention.numel()
    n_high = int(ratio * b)
    order = torch.sort(attention.detach(), descending=True, stable=True).indices
    mask = torch.ones(b, dtype=torch.bool, device=attention.device)
    mask[order[:n_high]] = False
    return mask


def scn_relabel(probs: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                candidates_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SCN's relabel rule. Returns (new_labels [B], changed_mask [B]).

    A sample changes when max_c P_c - P_y > ``margin`` (strictly) and it is a candidate; its new label is
    argmax_c P_c. ``candidates_mask`` (bool [B]) restricts the candidates (``None`` = all).
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must be [B, C], got shape {tuple(probs.shape)}")
    if labels.dim() != 1 or labels.numel() != probs.shape[0]:
        raise ValueError(f"labels must be [B] with B = {probs.shape[0]}, got shape {tuple(labels.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}]")
    probs = probs.detach()
    p_max, arg = probs.max(dim=1)
    p_y = probs.gather(1, labels.view(-1, 1)).squeeze(1)
    changed = (p_max - p_y) > margin
    if candidates_mask is not None:
        if candidates_mask.shape != labels.shape or candidates_mask.dtype != torch.bool:
            raise ValueError("candidates_mask must be a bool tensor of shape [B]")
        changed = changed & candidates_mask
    return torch.where(changed, arg, labels), changed
