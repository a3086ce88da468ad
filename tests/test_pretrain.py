"""The SynthFER-pretrained backbone (the MS-Celeb-1M stand-in) loads into every model like the real one."""
import pytest
import torch

from adadf_core.models.networks import build_model
from adadf_core.studies.pretrain import synthfer_backbone


@pytest.mark.slow
def test_backbone_is_trained_on_its_own_pool_exported_and_reused(tmp_path):
    path = tmp_path / "backbone.pth"
    out = synthfer_backbone(path, n_train=40, n_test=14, seed=3, epochs=1, image_size=32, batch_size=16,
                            device="cpu", progress=False)
    assert out == path and path.is_file()
    state = torch.load(path, weights_only=True)["state_dict"]          # the MS-Celeb file layout
    assert "layer4.1.bn2.running_var" in state and not any(k.startswith("module.") for k in state)
    pool_cfg = (tmp_path / "backbone.pth.pool" / "synthfer.json").read_text()
    assert '"seed": 3' in pool_cfg                                    # not the study's seed-0 data
    model = build_model("adadf", 7, pretrained=str(path))
    assert torch.equal(model.trunk.conv1.weight, state["conv1.weight"])           # the frozen trunk
    for branch in (model.branch1, model.branch2):
        assert torch.equal(branch.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert model.pretrained_source == str(path)
    mtime = path.stat().st_mtime_ns
    assert synthfer_backbone(path, seed=3) == path and path.stat().st_mtime_ns == mtime   # reused, not retrained


def test_the_study_seed_is_refused_for_the_pool(tmp_path):
    with pytest.raises(ValueError, match="seed=0 is the study's own SynthFER"):
        synthfer_backbone(tmp_path / "b.pth", seed=0)
