"""SLM-AEA (Ming, Lu, Zhang, ACCV 2022) as a training method on the shared trainer.

Pure functions are in ``adadf_core/ops/slm_aea_ops.py``, the AEA network in ``adadf_core/models/aea.py``;
docs/METHOD.md §11.
"""
from __future__ import annotations

import torch

from adadf_core.methods.base import EpochRecord, first_of_crops, flatten_crops, Method, per_image, unwrap
from adadf_core.methods.registry import register_method
from adadf_core.models.aea import AEAHead, build_aea_model
from adadf_core.ops.slm_aea_ops import init_soft_logits, slm_label_update, slm_ramps, soft_cross_entropy

# This method's options (TrainConfig fields), read by config.py from this text (docs/METHOD.md §14).
OPTIONS_TITLE = "SLM-AEA (docs/METHOD.md §11)"
OPTIONS = {  # field: (default, what it accepts, `adadf train --help` text)
    "slm_k": (5.0, "a finite value", "initial logit of the given label"),
    "slm_p": (0.97, "a value in (0, 1)", "initial probability of the given label"),
    "slm_step": (200.0, "a finite value > 0", "λ: step of the soft-label update"),
    "slm_alpha": (1.6, "a finite value", "α of the ramps"),
    "slm_beta": (7.0, "a finite value > 0", "β: epoch where the ramps switch"),
    "slm_nominal_batch": (72, "an integer >= 1", "batch the step is divided by (and the test batch)"),
    "slm_eval_mean": ("batch", ("batch", "running"), "batch (faithful, test-batch mean) | running"),
    "slm_schedule": ("exponential", ("exponential", "cosine"),
                     "exponential (shared recipe) | cosine (native, per step)"),
}
# SynthFER's 6-epoch budget: the ramps' switch scaled from 7 of 40 (17.5 % of training: epoch 1)
PRESETS = {"synthfer": {"slm_beta": 1.0}}
# its own recipe (§11.6), for notebook 08's "native" rows: all but the epoch count (native: 40)
NATIVE_RECIPE = {"recipe": "slm", "batch_size": 72, "slm_schedule": "cosine"}


@register_method("slm_aea")
class SLMAEAMethod(Method):
    """SLM-AEA on the shared trainer.

    State: the soft-label logit table ``Z`` [N, C] (float32, run's device), initialised from the data
    set's (possibly noisy) labels with ``init_soft_logits(k=cfg.slm_k, p=cfg.slm_p)``. Per step: soft CE of
    the AEA network against softmax(Z[idx]) (a constant); after the optimizer step, ``slm_label_update``
    with the pre-step predictions and the ramps at the fractional epoch eps = t / S (t = global iteration,
    0-based; S = steps per epoch), step ``cfg.slm_step`` over the nominal batch ``cfg.slm_nominal_batch``.

    Schedule: ``cfg.slm_schedule``: ``"exponential"`` (default, the shared
    harmonised ExponentialLR(lr_gamma) per epoch) or ``"cosine"`` (SLM-AEA's native per-iteration cosine
    from ``cfg.lr`` down to 1e-6 over the whole run).

    Evaluation: ``cfg.slm_eval_mean`` ``"batch"`` uses the test batch's own mean feature (faithful; the
    test loader must not shuffle, batches fixed) or ``"running"`` (a running mean of training batch means).
    Several processes: the training anchor is the mean of the global batch (gathered with gradients,
    ``cfg.ddp_attention_batch="global"``; ``"rank"`` keeps each process's own), and every test batch is
    evaluated whole on one process (``distributed.shard_batches``), so its anchor is one process's.

    Extra metrics.csv columns per epoch: ``soft_max_mean`` (mean over the N samples of max_c softmax(z_i)),
    ``soft_disagree`` (share of samples whose soft-label argmax differs from the given label), ``slm_u`` /
    ``slm_d`` (ramps at the epoch's last update); with synthetic noise ``recovered_flipped`` (share of
    flipped samples whose soft-label argmax is the clean label).
    """
    lr_min = 1e-6

    @classmethod
    def describe(cls) -> str:
        return "one network anchored on the batch-mean feature (AEA); loss soft CE against learned soft labels"

    def __init__(self, cfg, num_classes, train_set=None, run=None):
        super().__init__(cfg, num_classes, train_set, run)
        if cfg.slm_nominal_batch <= 0:
            raise ValueError(f"slm_nominal_batch must be > 0, got {cfg.slm_nominal_batch}")
        dev = self.device
        self.has_noise = False
        self.Z = torch.zeros(0, self.num_classes, device=dev)
        if train_set is not None:
            self.y_given = torch.as_tensor(train_set.labels).to(dev).long()
            self.clean = torch.as_tensor(train_set.clean_labels).to(dev).long()
            self.flipped = torch.as_tensor(train_set.flipped).to(dev).bool()
            self.has_noise = bool(self.flipped.any())
            self.Z = init_soft_logits(self.y_given, self.num_classes, k=cfg.slm_k, p=cfg.slm_p)
        self.last_ramps = (float("nan"), float("nan"))
        self._pending: dict = {}

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg, num_classes, pretrained=None):
        return build_aea_model(num_classes, cfg.backbone, eval_mean=cfg.slm_eval_mean, pretrained=pretrained,
                               trust_pickle=cfg.trust_pickle)

    @classmethod
    def test_batch_size(cls, cfg) -> int:
        """Faithful AEA evaluates with the test batch's own mean: fixed, unshuffled test batches of the
        original size (the test loader does not shuffle)."""
        return int(cfg.slm_nominal_batch) if cfg.slm_eval_mean == "batch" else int(cfg.batch_size)

    def make_scheduler(self, optimizer, steps_per_epoch: int):
        if self.cfg.slm_schedule == "cosine":
            total = max(int(self.cfg.epochs) * int(steps_per_epoch), 1)
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=self.lr_min), "step"
        return super().make_scheduler(optimizer, steps_per_epoch)

    # --- step --------------------------------------------------------------------------------------
    def training_step(self, model, images, labels, indices, epoch, step, steps_per_epoch):
        images, labels, indices, n_crops = flatten_crops(images, labels, indices)
        indices = indices.to(self.device).long()
        labels = labels.to(self.device).long()
        out = self._forward(model, images)
        logits = out["logits"].float()
        loss = soft_cross_entropy(logits, torch.softmax(self.Z[indices], dim=1))
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
            self._pending = dict(probs=torch.softmax(logits.detach(), 1), indices=indices, labels=labels,
                                 n_crops=n_crops, eps=((int(epoch) - 1) * steps_per_epoch + step) / steps_per_epoch)
        return loss, {"loss": loss.detach(), "loss_ce": loss.detach(), "train_acc": acc}

    def _forward(self, model, images) -> dict:
        """The forward pass; with several processes the AEA head anchors on the global batch's mean (its
        ``gather`` is set for this pass only: the module stays plain to copy, save and export)."""
        head = getattr(unwrap(model), "head", None)
        gather = self._attention_gather() if isinstance(head, AEAHead) else None
        if gather is None:
            return model(images)
        head.gather = lambda f: gather(f)[0]
        try:
            return model(images)
        finally:
            head.gather = None

    @torch.no_grad()
    def after_optimizer_step(self, model) -> None:
        ctx, self._pending = self._pending, {}
        if not ctx:
            return
        n = ctx["n_crops"]                         # crops: one update per image from the mean prediction
        probs = per_image(ctx["probs"], n)
        idx, y = first_of_crops(ctx["indices"], n), first_of_crops(ctx["labels"], n)
        probs, idx, y = self._share_rows(probs, idx, y)       # every process: the same table
        cfg = self.cfg
        u, d = slm_ramps(ctx["eps"], cfg.slm_alpha, cfg.slm_beta)
        self.last_ramps = (u, d)
        self.Z[idx] = slm_label_update(self.Z[idx], probs, y, u, d, step=cfg.slm_step,
                                       nominal_batch=cfg.slm_nominal_batch)

    @torch.no_grad()
    def end_epoch(self, model, epoch, train_loader) -> EpochRecord:
        out = {"slm_u": self.last_ramps[0], "slm_d": self.last_ramps[1]}
        if self.Z.numel():
            q = torch.softmax(self.Z, dim=1)
            top = q.argmax(1)
            out["soft_max_mean"] = float(q.max(1).values.mean())
            out["soft_disagree"] = float((top != self.y_given).float().mean())
            if self.has_noise:
                out["recovered_flipped"] = float((top[self.flipped] == self.clean[self.flipped]).float().mean())
        return EpochRecord(metrics=out)

    def soft_labels(self) -> torch.Tensor:
        """The current soft labels softmax(Z) [N, C] (CPU)."""
        return torch.softmax(self.Z, dim=1).cpu()

    # --- checkpoint --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"Z": self.Z.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        Z = torch.as_tensor(state["Z"]).float()
        if Z.dim() != 2 or Z.shape[1] != self.num_classes or (
                self.train_set is not None and Z.shape != self.Z.shape):
            raise ValueError(f"SLM state has a soft-label table of shape {tuple(Z.shape)}; expected "
                             f"{tuple(self.Z.shape) if self.train_set is not None else ('N', self.num_classes)}")
        self.Z = Z.to(self.device)
