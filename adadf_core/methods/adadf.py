"""Ada-DF (docs/METHOD.md §1-§5) and its ablation variants, as a training method.

The whole method is on one screen: ``training_step`` is the step of §2 (the pure functions of
``adadf_core.ops.adadf_ops`` compose it), ``end_epoch`` mines the class distributions of §4. Everything notebooks
05-07 look at besides D is recorded by ``AdaDFDiagnostics`` (``diagnostics.py``).

State: the class-distribution matrix ``D`` [C, C] on the run's device; the D mined after epoch e is used
throughout epoch e + 1. Mining (``cfg.cd_source``): ``eval_pass`` runs one more pass over the training
loader in eval mode without grad after the epoch (the authors' code); ``train_pass`` accumulates
softmax(o_1) during the training steps.
"""
from __future__ import annotations

import torch

from adadf_core.methods.base import EpochRecord, flatten_crops, Method, unwrap
from adadf_core.methods.diagnostics import AdaDFDiagnostics
from adadf_core.methods.registry import register_method
from adadf_core.models.networks import build_model
from adadf_core.ops import adadf_ops as A

CD_SOURCES = ("eval_pass", "train_pass")
MINING_SUBSETS = ("redraw", "same")   # AffectNet: the sampler's subset in the mining pass (§4)


@register_method("adadf")
class AdaDFMethod(Method):
    """Ada-DF: the target branch learns from the fusion of d and D[y] (``variant`` "adadf")."""
    variant = "adadf"
    needs_train_eval_set = True

    def __init__(self, cfg, num_classes, train_set=None, run=None):
        super().__init__(cfg, num_classes, train_set, run)
        C = self.num_classes
        self.D = A.initial_class_distribution(C, cfg.threshold, device=self.device)
        self.miner = A.ClassDistributionMiner(C, self.device)
        self.fallback = torch.zeros(C, dtype=torch.bool, device=self.device)
        self.diagnostics = AdaDFDiagnostics(cfg, C, train_set, self.run, self.variant)

    @classmethod
    def describe(cls) -> str:
        return (f"two branches; loss w_CE·CE(o_1, y) + w_KL·KL(f ‖ o_2) + RR(ā) (§2.9), "
                f"target f = {A.TARGET_FORMULAS[cls.variant]}")

    @classmethod
    def build_model(cls, cfg, num_classes, pretrained=None):
        return build_model("adadf", num_classes, backbone=cfg.backbone, attention_on=cfg.attention_on,
                           pretrained=pretrained, freeze_trunk_bn=cfg.freeze_trunk_bn, trust_pickle=cfg.trust_pickle)

    # --- §2-§3: one training step ------------------------------------------------------------------
    def training_step(self, model, images, labels, indices, epoch, step, steps_per_epoch):
        cfg = self.cfg
        images, labels, indices, n_crops = flatten_crops(images, labels, indices)
        out = model(images)
        gather = self._attention_gather()
        parts = A.adadf_loss(out, labels, self.D, epoch, variant=self.variant,
                             epoch_threshold=cfg.epoch_threshold, lam_min=cfg.lambda_min,
                             lam_max=cfg.lambda_max, rr_ratio=cfg.rr_ratio, rr_margin=cfg.rr_margin,
                             group_size=self._group(n_crops, global_batch=gather is not None),
                             kl_divisor=self._group(n_crops), detach_target=cfg.detach_target,
                             rr_low_group=cfg.rr_low_group, gather=gather)
        with torch.no_grad():
            self.diagnostics.observe_step(parts["attention"], labels, indices)
            if cfg.cd_source == "train_pass":
                self._observe(parts["label_dist"].detach(), parts["weight"].detach(),
                              parts["attention"].detach(), labels, indices)
            acc = (out["logits"].argmax(1) == labels).float().mean()
        logs = {k: parts[k].detach() for k in ("loss", "loss_ce", "loss_kl", "loss_rr")}
        logs.update(w_ce=parts["w_ce"], w_kl=parts["w_kl"], train_acc=acc)
        return parts["loss"], logs

    # --- §4: class-distribution mining -------------------------------------------------------------
    def _observe(self, label_dist, weight, attention, labels, indices):
        """Add one batch of the mining pass (detached tensors)."""
        self.miner.update(label_dist, labels)
        self.diagnostics.observe_pass(label_dist, weight, attention, indices)

    @torch.no_grad()
    def _eval_pass(self, model, train_loader):
        """One more full pass over the training loader, eval mode, no grad (§4, official). D needs o_1
        alone, so only the auxiliary branch runs (``forward_aux``), unless the diagnostics want d, ŵ and ā
        of every sample (``AdaDFDiagnostics.wants_pass``): then the whole network, as the authors' code."""
        self.miner.reset()
        self.diagnostics.start_pass()
        cfg, run = self.cfg, self.run
        full = self.diagnostics.wants_pass or not hasattr(unwrap(model), "forward_aux")
        forward = unwrap(model) if full else unwrap(model).forward_aux
        was_training = model.training
        model.eval()
        try:
            for images, labels, indices in train_loader:
                images = run.train_images(images)
                labels = labels.to(self.device).long()
                indices = indices.to(self.device).long()
                images, labels, indices, _ = flatten_crops(images, labels, indices)
                with run.autocast():
                    out = forward(images)
                if full:
                    t = A.adadf_targets(out["aux_logits"], out["attention"], labels, self.D, self.variant,
                                        cfg.lambda_min, cfg.lambda_max, gather=self._attention_gather())
                    self._observe(t["label_dist"], t["weight"], t["attention"], labels, indices)
                else:
                    self.miner.update(torch.softmax(out["aux_logits"].float(), dim=1), labels)
        finally:
            model.train(was_training)

    def end_epoch(self, model, epoch, train_loader) -> EpochRecord:
        cfg = self.cfg
        if cfg.cd_source == "eval_pass":
            self._eval_pass(model, train_loader)
        d = self.run.dist
        self.miner.reduce(d.all_reduce_sum if d.active else None)     # every process: the same D
        self.diagnostics.reduce(d)
        self.D = self.miner.compute(cfg.threshold, cfg.fallback_offdiag).to(self.device)
        self.fallback = self.miner.fallback.clone()
        record = self.diagnostics.record(model, epoch, self.D, self.fallback)
        self.miner.reset()                    # train_pass: the next epoch's steps start a new pass
        self.diagnostics.start_pass()
        return record

    # --- records and checkpoint --------------------------------------------------------------------
    def initial_record(self) -> EpochRecord:
        return EpochRecord(class_distribution=self.D.detach().cpu().numpy().astype("float32"),
                           tracked=self.diagnostics.static_info())

    def state_dict(self) -> dict:
        return {"D": self.D.detach().cpu(), "fallback": self.fallback.cpu(),
                "tracked_indices": self.diagnostics.tracked_indices.clone()}

    def load_state_dict(self, state: dict) -> None:
        D = state["D"]
        if tuple(D.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"method state has D of shape {tuple(D.shape)}; expected "
                             f"[{self.num_classes}, {self.num_classes}]")
        self.D = D.to(self.device).float()
        self.fallback = state.get("fallback", self.fallback).to(self.device)
        if "tracked_indices" in state:
            self.diagnostics.tracked_indices = state["tracked_indices"].clone()


@register_method("ld_only")
class LDOnlyMethod(AdaDFMethod):
    """Ablation (§5): the target branch learns from the label distributions alone (f = d)."""
    variant = "ld_only"


@register_method("cd_only")
class CDOnlyMethod(AdaDFMethod):
    """Ablation (§5): the target branch learns from the class distributions alone (f = D[y])."""
    variant = "cd_only"
