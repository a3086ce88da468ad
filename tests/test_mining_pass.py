"""The mining pass runs only the auxiliary branch and the test pass only the target branch, with the same
numbers as the full network (issue 12): D, its fallback rows and the evaluation are bit-identical."""
import torch

from adadf_core.engine.evaluate import evaluate
from adadf_core.methods import RunContext
from adadf_core.methods.adadf import AdaDFMethod
from tests.test_methods import C, FakeSet, make_cfg


class Calls:
    """Counts the forward calls of one submodule."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def mine(pass_diagnostics, ds, threshold=0.15):
    torch.manual_seed(0)
    cfg = make_cfg(pass_diagnostics=pass_diagnostics, threshold=threshold, track_samples=0)
    method = AdaDFMethod(cfg, C, ds, RunContext())
    model = AdaDFMethod.build_model(cfg, C)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, drop_last=True)
    branch1, branch2 = Calls(model.branch1.layer4), Calls(model.branch2.layer4)
    record = method.end_epoch(model, 1, loader)
    return method, record, branch1.n, branch2.n


def test_aux_only_mining_gives_the_full_pass_D_bit_for_bit():
    ds = FakeSet(n=40)
    full, rec_full, b1_full, b2_full = mine(True, ds)
    aux, rec_aux, b1_aux, b2_aux = mine(None, ds)       # no votes, no noise: diagnostics not wanted
    assert (b1_full, b2_full) == (5, 5)                 # 40 // 8 batches through both branches
    assert (b1_aux, b2_aux) == (5, 0)                   # the target branch never runs
    assert torch.equal(aux.D, full.D) and torch.equal(aux.fallback, full.fallback)
    assert 0 < int(aux.fallback.sum()) < C              # both kinds of rows occur
    assert rec_aux.metrics["fallback_classes"] == rec_full.metrics["fallback_classes"]


def test_diagnostics_keep_the_full_pass_where_votes_exist():
    _, rec, b1, b2 = mine(None, FakeSet(n=16, gt=True))
    assert (b1, b2) == (2, 2) and "js_gt_fused" in rec.metrics
    _, rec_off, _, b2_off = mine(False, FakeSet(n=16, gt=True))
    assert b2_off == 0 and "js_gt_fused" not in rec_off.metrics


def test_evaluation_runs_the_target_branch_only():
    cfg = make_cfg()
    torch.manual_seed(0)
    model = AdaDFMethod.build_model(cfg, C).eval()
    ds = FakeSet(n=12)
    branch1 = Calls(model.branch1.layer4)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)
    ev = evaluate(model, loader, num_classes=C)
    assert branch1.n == 0
    with torch.no_grad():
        want = model(ds.images)["logits"].argmax(1).numpy()
    assert (ev["preds"] == want).all()
