"""SCN (Self-Cure Network, Wang et al., CVPR 2020) as a training method on the shared trainer.

Pure functions (relabel rule, low-importance group) are in ``adadf_core/ops/scn_ops.py``; docs/METHOD.md §12.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from adadf_core.methods.base import EpochRecord, first_of_crops, flatten_crops, Method, per_image
from adadf_core.methods.diagnostics import AttentionStats
from adadf_core.methods.registry import register_method
from adadf_core.models.networks import build_model
from adadf_core.ops.adadf_ops import rank_regularization
from adadf_core.ops.scn_ops import low_importance_mask, scn_relabel

# This method's options (TrainConfig fields), read by config.py from this text (docs/METHOD.md §14).
OPTIONS_TITLE = "SCN (docs/METHOD.md §12)"
OPTIONS = {  # field: (default, what it accepts, `adadf train --help` text)
    "scn_relabel_epoch": (10, "an integer >= 1", "first epoch (1-based) that relabels"),
    "scn_relabel_margin": (0.2, "a finite value >= 0", "δ2: relabel when max_c P_c - P_y exceeds it"),
    "scn_relabel_scope": ("all", ("all", "low"), "all (the code) | low (the paper): which samples may be relabelled"),
}
# SynthFER's 6-epoch budget: the relabel epoch scaled from 10 of 70 (14 %: after the first epoch)
PRESETS = {"synthfer": {"scn_relabel_epoch": 2}}
# its own recipe (§12.4), for notebook 08's "native" rows: all but the epoch count (native: 70)
NATIVE_RECIPE = {"recipe": "scn", "weight_decay": 1e-4, "batch_size": 64, "rr_margin": 0.07}


@register_method("scn")
class SCNMethod(Method):
    """SCN: single ResNet + attention head (logits = alpha * z), CE + RR, relabelling.

    State: ``y_cur`` [N] (long, run's device), the current training labels, starting at the data set's
    (possibly noisy) labels and changed persistently by the relabel rule. Extra metrics.csv columns per
    epoch: ``relabeled`` (relabels this epoch), ``relabeled_share`` (share of samples whose current label
    differs from the given one); with synthetic noise ``recovered_flipped`` (share of flipped samples whose
    current label is the clean one), ``relabel_restored`` (share of this epoch's relabels that set the clean
    label), ``attn_flipped`` / ``attn_clean`` (mean attention of the training steps).
    """

    @classmethod
    def describe(cls) -> str:
        return "one network, logits scaled by its attention α; loss CE(α·z, y) + RR(α); relabels confident samples"

    def __init__(self, cfg, num_classes, train_set=None, run=None):
        super().__init__(cfg, num_classes, train_set, run)
        dev = self.device
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
        self.attn_stats = AttentionStats(self.num_classes, dev)
        self._pending: dict = {}

    @classmethod
    def build_model(cls, cfg, num_classes, pretrained=None):
        """Single ResNet with SCN's head; the attention always scales the logits (SCN's design), whatever
        the profile's ``attention_on`` (an Ada-DF switch) says."""
        return build_model("single", num_classes, backbone=cfg.backbone, attention_on="logits",
                           pretrained=pretrained, attention_head=True, trust_pickle=cfg.trust_pickle)

    def relabel_active(self, epoch: int) -> bool:
        """Relabelling runs in epochs >= cfg.scn_relabel_epoch (1-based)."""
        return int(epoch) >= int(self.cfg.scn_relabel_epoch)

    def training_step(self, model, images, labels, indices, epoch, step, steps_per_epoch):
        images, labels, indices, n_crops = flatten_crops(images, labels, indices)
        indices = indices.to(self.device).long()
        out = model(images)
        logits = out["logits"].float()            # alpha * z
        att = out["attention"].float()
        loss_ce = F.cross_entropy(logits, self.y_cur[indices])
        gather = self._attention_gather()
        att_all = att if gather is None else gather(att)[0]
        loss_rr = rank_regularization(att_all, self.cfg.rr_ratio, self.cfg.rr_margin,
                                      group_size=self._group(n_crops, global_batch=gather is not None),
                                      low_group=self.cfg.rr_low_group)
        loss = loss_ce + loss_rr
        self._pending = {}
        with torch.no_grad():
            y = labels.to(self.device).long()
            self.attn_stats.add(att, y, self.flipped[indices] if self.has_noise else None)
            acc = (logits.argmax(1) == y).float().mean()
            if self.relabel_active(epoch):
                self._pending = dict(probs=torch.softmax(logits.detach(), 1), attention=att.detach(),
                                     indices=indices, n_crops=n_crops)
        logs = {"loss": loss.detach(), "loss_ce": loss_ce.detach(), "loss_rr": loss_rr.detach(),
                "train_acc": acc}
        return loss, logs

    @torch.no_grad()
    def after_optimizer_step(self, model) -> None:
        ctx, self._pending = self._pending, {}
        if not ctx:
            return
        n = ctx["n_crops"]                         # SFEW crops: one decision per image
        probs, att = per_image(ctx["probs"], n), per_image(ctx["attention"], n)
        idx = first_of_crops(ctx["indices"], n)
        probs, att, idx = self._share_rows(probs, att, idx)   # every process: the global batch's relabels
        cand = low_importance_mask(att, self.cfg.rr_ratio) if self.cfg.scn_relabel_scope == "low" else None
        new, changed = scn_relabel(probs, self.y_cur[idx], self.cfg.scn_relabel_margin, cand)
        self.y_cur[idx] = new
        self._relabels += changed.sum()
        if self.has_noise:
            self._restored += (changed & (new == self.clean[idx])).sum()

    @torch.no_grad()
    def end_epoch(self, model, epoch, train_loader) -> EpochRecord:
        self.attn_stats.reduce(self.run.dist)
        out: dict[str, float] = {"relabeled": float(self._relabels)}
        if self.y_cur.numel():
            out["relabeled_share"] = float((self.y_cur != self.y_given).float().mean())
        if self.has_noise:
            out["recovered_flipped"] = float((self.y_cur[self.flipped] == self.clean[self.flipped]).float().mean())
            n = int(self._relabels)
            out["relabel_restored"] = float(self._restored) / n if n else float("nan")
            out.update(self.attn_stats.noise_metrics())
        names = list(getattr(self.train_set, "class_names", None) or range(self.num_classes))
        record = EpochRecord(metrics=out, attention_rows=self.attn_stats.rows(epoch, names))
        self._relabels.zero_(); self._restored.zero_(); self.attn_stats.reset()
        return record

    def state_dict(self) -> dict:
        return {"y_cur": self.y_cur.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        y = torch.as_tensor(state["y_cur"]).long()
        if self.train_set is not None and y.shape != self.y_cur.shape:
            raise ValueError(f"SCN state has {y.numel()} labels; the training set has {self.y_cur.numel()}")
        self.y_cur = y.to(self.device)
