"""SCN: Self-Cure Network (Wang et al., CVPR 2020), re-implemented on the shared ResNet-18 trainer.

From ``shared/docs/peer_methods.md`` section 3:

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

Pure tensor functions: :func:`scn_relabel`, :func:`low_importance_mask`. Method: :class:`SCNMethod`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .adadf import rank_regularization
from .methods import AttentionStats, Method, flatten_crops

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


# ----------------------------------------------------------------------------- method

class SCNMethod(Method):
    """SCN on the shared trainer: single ResNet + attention head (logits = alpha * z), CE + RR, relabelling.

    State: ``y_cur`` [N] (long, model's device), the current training labels, starting at the data set's
    (possibly noisy) labels and changed persistently by the relabel rule. Extra metrics.csv columns per
    epoch: ``relabeled`` (relabels this epoch), ``relabeled_share`` (share of samples whose current label
    differs from the given one); with synthetic noise ``recovered_flipped`` (share of flipped samples whose
    current label is the clean one), ``relabel_restored`` (share of this epoch's relabels that set the clean
    label), ``attn_flipped`` / ``attn_clean`` (mean attention of the training steps).
    """

    name = "scn"
    arch = "single"
    uses_attention = True
    attention_head = True

    def __init__(self, cfg, num_classes, train_set, device):
        super().__init__(cfg, num_classes, train_set, device)
        if cfg.scn_relabel_scope not in SCOPES:
            raise ValueError(f"scn_relabel_scope={cfg.scn_relabel_scope!r} is not valid; expected one of "
                             f"{', '.join(SCOPES)}")
        dev = self.device
        C = self.num_classes
        self.has_noise = False
        self.y_cur = torch.zeros(0, dtype=torch.long, device=dev)
        if train_set is not None:
            self.y_given = torch.as_tensor(train_set.labels).to(dev).long()
            self.y_cur = self.y_given.clone()
            self.clean = torch.as_tensor(train_set.clean_labels).to(dev).long()
            self.flipped = torch.as_tensor(train_set.flipped).to(dev).bool()
            self.has_noise = bool(self.flipped.any())
        self._relabels = torch.zeros((), dtype=torch.long, device=dev)
        self._restored = torch.zeros((), dtype=torch.long, device=dev)
        self.attn_stats = AttentionStats(C, dev)
        self._record: dict = {}

    def build_model(self, pretrained: bool = True) -> nn.Module:
        """Single ResNet with SCN's head; the attention always scales the logits (SCN's design), whatever
        the profile's ``attention_on`` (an Ada-DF switch) says."""
        from .model import build_model

        cfg = self.cfg
        return build_model("single", self.num_classes, backbone=cfg.backbone, attention_on="logits",
                           pretrained=cfg.pretrained if pretrained else None, attention_head=True)

    def relabel_active(self, epoch: int) -> bool:
        """Relabelling runs in epochs >= cfg.scn_relabel_epoch (1-based)."""
        return int(epoch) >= int(self.cfg.scn_relabel_epoch)

    def on_epoch_start(self, epoch: int) -> None:
        self._relabels.zero_(); self._restored.zero_(); self.attn_stats.reset()

    def training_step(self, model, images, labels, indices, epoch, step, steps_per_epoch):
        images, labels, indices, n_crops = flatten_crops(images, labels, indices)
        indices = indices.to(self.device).long()
        out = model(images)
        logits = out["logits"].float()            # alpha * z
        att = out["attention"].float()
        targets = self.y_cur[indices]
        loss_ce = F.cross_entropy(logits, targets)
        group = self._group(n_crops)
        loss_rr = rank_regularization(att, self.cfg.rr_ratio, self.cfg.rr_margin, group_size=group)
        loss = loss_ce + loss_rr
        with torch.no_grad():
            y = labels.to(self.device).long()
            self.attn_stats.add(att, y, self.flipped[indices] if self.has_noise else None)
            acc = (logits.argmax(1) == y).float().mean()
            if self.relabel_active(epoch):
                self.step_ctx.update(probs=torch.softmax(logits.detach(), 1), attention=att.detach(),
                                     indices=indices, n_crops=n_crops)
        logs = {"loss": loss.detach(), "loss_ce": loss_ce.detach(), "loss_rr": loss_rr.detach(),
                "train_acc": acc}
        return loss, logs

    @torch.no_grad()
    def after_optimizer_step(self, model, ctx: dict) -> None:
        if "probs" not in ctx:
            return
        probs, att, idx, n = ctx["probs"], ctx["attention"], ctx["indices"], ctx["n_crops"]
        if n is not None:                          # SFEW crops: one decision per image
            probs = probs.view(-1, n, probs.shape[1]).mean(1)
            att = att.view(-1, n).mean(1)
            idx = idx.view(-1, n)[:, 0]
        cand = low_importance_mask(att, self.cfg.rr_ratio) if self.cfg.scn_relabel_scope == "low" else None
        new, changed = scn_relabel(probs, self.y_cur[idx], self.cfg.scn_relabel_margin, cand)
        self.y_cur[idx] = new
        self._relabels += changed.sum()
        if self.has_noise:
            self._restored += (changed & (new == self.clean[idx])).sum()

    @torch.no_grad()
    def on_epoch_end(self, model, epoch, train_loader) -> dict[str, float]:
        out: dict[str, float] = {"relabeled": float(self._relabels)}
        if self.y_cur.numel():
            out["relabeled_share"] = float((self.y_cur != self.y_given).float().mean())
        if self.has_noise:
            out["recovered_flipped"] = float((self.y_cur[self.flipped] == self.clean[self.flipped]).float().mean())
            n = int(self._relabels)
            out["relabel_restored"] = float(self._restored) / n if n else float("nan")
            out.update(self.attn_stats.noise_metrics())
        names = list(getattr(self.train_set, "class_names", None) or range(self.num_classes))
        self._record = {"attention_by_class": self.attn_stats.rows(epoch, names)}
        return out

    def epoch_record(self, epoch: int) -> dict:
        return self._record

    def state_dict(self) -> dict:
        return {"y_cur": self.y_cur.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        y = torch.as_tensor(state["y_cur"]).long()
        if self.train_set is not None and y.shape != self.y_cur.shape:
            raise ValueError(f"SCN state has {y.numel()} labels; the training set has {self.y_cur.numel()}")
        self.y_cur = y.to(self.device)

