"""AdaDFNet / SingleNet structure, outputs, gradient flow and pretrained loading (adadf_core/models/networks.py)."""
import pytest
import torch
import torchvision

from adadf_core.ops.adadf_ops import adadf_targets, initial_class_distribution, kl_target_loss
from adadf_core.models.networks import AdaDFNet, PretrainedLoadError, SingleNet, build_model, load_pretrained

torch.set_num_threads(1)


def _x(b=4, size=32, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return AdaDFNet(num_classes=7)


# ---------------------------------------------------------------------------- structure
def test_output_shapes_resnet18(net):
    out = net(_x())
    assert out["logits"].shape == (4, 7) and out["aux_logits"].shape == (4, 7)
    assert out["attention"].shape == (4, 2) and out["features"].shape == (4, 512)
    assert ((out["attention"] > 0) & (out["attention"] < 1)).all()


def test_output_shapes_resnet50():
    model = build_model("adadf", 3, backbone="resnet50")
    out = model(_x(b=2, size=32))
    assert out["logits"].shape == (2, 3) and out["features"].shape == (2, 2048)
    assert model.head1.in_features == 2048


def test_branches_identical_at_init_heads_not(net):
    s1, s2 = net.branch1.state_dict(), net.branch2.state_dict()
    assert list(s1) == list(s2) and "fc.weight" in s1
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key
    assert s1["fc.weight"].shape == (7, 512)
    assert net.branch1.layer2[0].conv1.weight is not net.branch2.layer2[0].conv1.weight
    assert not torch.equal(net.head1.weight, net.head2.weight)


def test_trunk_frozen_branches_trainable(net):
    assert list(net.trunk._modules) == ["conv1", "bn1", "relu", "maxpool", "layer1"]
    assert all(not p.requires_grad for p in net.trunk.parameters())
    others = [p for n, p in net.named_parameters() if not n.startswith("trunk.")]
    assert others and all(p.requires_grad for p in others)
    assert net.trunk.training                      # frozen, but BN statistics still update by default


def test_logits_mode_is_attention_times_logits(net):
    net.eval()
    with torch.no_grad():
        out = net(_x())
        a2 = out["attention"][:, 1:]
        torch.testing.assert_close(out["logits"], a2 * net.branch2.fc(out["features"]), rtol=0, atol=1e-6)
        h1 = net.branch1.features(net.trunk(_x()))
        torch.testing.assert_close(out["aux_logits"], out["attention"][:, :1] * net.branch1.fc(h1),
                                   rtol=0, atol=1e-6)
    net.train()


def test_features_mode_scales_features():
    torch.manual_seed(1)
    model = AdaDFNet(5, attention_on="features").eval()
    with torch.no_grad():
        out = model(_x())
        a2, h2 = out["attention"][:, 1:], out["features"]
        torch.testing.assert_close(out["logits"], model.branch2.fc(a2 * h2), rtol=0, atol=1e-6)
        assert not torch.allclose(out["logits"], a2 * model.branch2.fc(h2), atol=1e-4)


def test_forward_target_matches_forward(net):
    net.eval()
    with torch.no_grad():
        full, target = net(_x()), net.forward_target(_x())
    torch.testing.assert_close(target["logits"], full["logits"])
    torch.testing.assert_close(target["features"], full["features"])
    torch.testing.assert_close(target["attention"], full["attention"][:, 1])
    net.train()


def test_trunk_bn_statistics():
    model = AdaDFNet(7)
    before = model.trunk.bn1.running_mean.clone()
    model(_x())
    assert not torch.equal(model.trunk.bn1.running_mean, before)      # default: stats update
    frozen = AdaDFNet(7, freeze_trunk_bn=True)
    frozen.train()
    assert frozen.training and frozen.branch1.training and not frozen.trunk.bn1.training
    trunk_before = frozen.trunk.bn1.running_mean.clone()
    branch_before = frozen.branch2.layer2[0].bn1.running_mean.clone()
    frozen(_x())
    assert torch.equal(frozen.trunk.bn1.running_mean, trunk_before)
    assert torch.equal(frozen.trunk.layer1[0].bn1.running_var, torch.ones(64))
    assert not torch.equal(frozen.branch2.layer2[0].bn1.running_mean, branch_before)
    frozen.set_freeze_trunk_bn(False)
    assert frozen.trunk.bn1.training


def test_channels_last_forward_backward(net):
    model = AdaDFNet(7).to(memory_format=torch.channels_last).eval()
    x = _x()
    out_cl = model(x.contiguous(memory_format=torch.channels_last))
    ref = model(x)
    torch.testing.assert_close(out_cl["logits"], ref["logits"], rtol=1e-4, atol=1e-4)
    model.train()
    model(x.contiguous(memory_format=torch.channels_last))["logits"].sum().backward()
    assert model.branch2.layer2[0].conv1.weight.grad is not None


# ------------------------------------------------------------------------- gradient flow
def _kl_grads(detach_target):
    torch.manual_seed(0)
    model = AdaDFNet(3)
    out = model(_x())
    targets = adadf_targets(out["aux_logits"], out["attention"], torch.tensor([0, 1, 2, 0]),
                            initial_class_distribution(3, 0.7), "adadf", detach_target=detach_target)
    kl_target_loss(targets["fused"], out["logits"]).backward()
    return model


def _grad_norm(params):
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def test_kl_reaches_aux_branch_and_heads_by_default():
    model = _kl_grads(detach_target=False)
    assert _grad_norm(model.branch1.layer2.parameters()) > 0
    assert _grad_norm(model.head1.parameters()) > 0 and _grad_norm(model.head2.parameters()) > 0
    assert _grad_norm(model.branch2.layer2.parameters()) > 0
    assert all(p.grad is None for p in model.trunk.parameters())


def test_detach_target_stops_kl_at_aux_branch():
    model = _kl_grads(detach_target=True)
    assert _grad_norm(model.branch1.parameters()) == 0
    assert _grad_norm(model.head1.parameters()) == 0
    assert _grad_norm(model.branch2.layer2.parameters()) > 0
    assert _grad_norm(model.head2.parameters()) > 0            # o_2 = a_2 * z_2 still uses head 2
    assert all(p.grad is None for p in model.trunk.parameters())


# ----------------------------------------------------------------------------- SingleNet
def test_single_net_plain_and_with_head():
    torch.manual_seed(0)
    plain = build_model("single", 7)
    out = plain(_x())
    assert set(out) == {"logits", "features"} and out["logits"].shape == (4, 7)
    assert all(p.requires_grad for p in plain.parameters())
    assert plain.pretrained_source == "scratch" and plain.load_report is None
    scn = SingleNet(7, attention_head=True).eval()
    with torch.no_grad():
        o = scn(_x())
        assert o["attention"].shape == (4,)
        torch.testing.assert_close(o["logits"], o["attention"][:, None] * scn.net.fc(o["features"]),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(scn.forward_target(_x())["logits"], o["logits"])


def test_build_model_errors():
    with pytest.raises(ValueError, match="arch='triple'"):
        build_model("triple", 7)
    with pytest.raises(ValueError, match="backbone='vgg'"):
        build_model("adadf", 7, backbone="vgg")
    with pytest.raises(ValueError, match="attention_on='both'"):
        build_model("single", 7, attention_on="both")


# ------------------------------------------------------------------------ pretrained
@pytest.fixture(scope="module")
def source_sd():
    torch.manual_seed(123)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("layout", ["msceleb", "raw", "module_prefix"])
def test_load_pretrained_layouts_reach_both_branches(tmp_path, source_sd, layout):
    path = tmp_path / f"{layout}.pth"
    if layout == "msceleb":
        torch.save({"state_dict": source_sd}, path)
    elif layout == "raw":
        torch.save(source_sd, path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in source_sd.items()}}, path)
    model = build_model("adadf", 7, pretrained=str(path))
    assert model.pretrained_source == str(path)
    report = model.load_report
    assert report.ignored == ["fc.bias", "fc.weight"] and "layer2.0.conv1.weight" in report.loaded
    assert report.stripped_prefix == (layout == "module_prefix")
    for branch in (model.branch1, model.branch2):
        assert torch.equal(branch.layer2[0].conv1.weight, source_sd["layer2.0.conv1.weight"])
        assert torch.equal(branch.layer4[1].bn2.running_var, source_sd["layer4.1.bn2.running_var"])
        assert branch.fc.weight.shape == (7, 512)
    assert torch.equal(model.trunk.conv1.weight, source_sd["conv1.weight"])
    assert torch.equal(model.branch1.fc.weight, model.branch2.fc.weight)


def test_load_pretrained_into_built_models(tmp_path, source_sd):
    path = tmp_path / "w.pth"
    torch.save(source_sd, path)
    single = SingleNet(7, pretrained=path)
    assert torch.equal(single.net.layer3[0].conv2.weight, source_sd["layer3.0.conv2.weight"])
    model = AdaDFNet(7)                                  # after construction: both branches, fc untouched
    fc_before = model.branch2.fc.weight.clone()
    load_pretrained(model, path)
    assert torch.equal(model.branch1.layer2[0].conv1.weight, source_sd["layer2.0.conv1.weight"])
    assert torch.equal(model.branch2.layer2[0].conv1.weight, source_sd["layer2.0.conv1.weight"])
    assert torch.equal(model.branch2.fc.weight, fc_before)


def test_load_pretrained_old_checkpoint_without_num_batches_tracked(tmp_path, source_sd):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in source_sd.items() if not k.endswith("num_batches_tracked")}, path)
    report = load_pretrained(torchvision.models.resnet18(weights=None), path)
    assert "bn1.num_batches_tracked" in report.defaulted


def test_load_pretrained_errors_name_key_and_path(tmp_path, source_sd):
    bad = dict(source_sd)
    bad["layer9.weight"] = bad.pop("layer2.0.conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": bad}, path)
    with pytest.raises(PretrainedLoadError) as err:
        build_model("adadf", 7, pretrained=path)
    msg = str(err.value)
    assert str(path) in msg and "missing keys: layer2.0.conv1.weight" in msg and "unexpected keys: layer9.weight" in msg

    r50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(PretrainedLoadError, match=r"r50\.pth.*(missing|shape)"):
        build_model("single", 7, pretrained=r50)

    with pytest.raises(PretrainedLoadError, match="nothere.pth does not exist"):
        build_model("adadf", 7, pretrained=tmp_path / "nothere.pth")
    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(PretrainedLoadError, match="junk.pth are not a state dict"):
        load_pretrained(torchvision.models.resnet18(weights=None), junk)


def test_bf16_autocast_losses_are_float32_and_finite():
    from adadf_core.ops.adadf_ops import adadf_loss
    torch.manual_seed(0)
    model = AdaDFNet(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_x())
        parts = adadf_loss(out, torch.tensor([0, 1, 2, 0]), initial_class_distribution(3, 0.7), 2)
    assert out["logits"].dtype == torch.bfloat16
    for key in ("loss", "loss_ce", "loss_kl", "loss_rr", "fused"):
        assert parts[key].dtype == torch.float32 and torch.isfinite(parts[key]).all(), key
    parts["loss"].backward()
    assert _grad_norm(model.branch1.layer2.parameters()) > 0


def test_load_pretrained_reports_n_of_m_its_sha256_and_untrained_weights(tmp_path, source_sd, capsys):
    import hashlib
    path = tmp_path / "fresh.pth"
    torch.save({"state_dict": source_sd}, path)                  # a freshly initialised ResNet-18
    with pytest.warns(UserWarning, match=r"fresh.pth: all 20 BatchNorm layers hold their initial values .* look untrained"):
        report = load_pretrained(torchvision.models.resnet18(weights=None), path)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"pretrained weights: loaded 120 of 120 tensors from {path}" in capsys.readouterr().out
    trained = {k: (v + 0.5 if k.endswith("running_mean") else v) for k, v in source_sd.items()}
    torch.save(trained, tmp_path / "trained.pth")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = {k: v for k, v in trained.items() if not k.endswith("num_batches_tracked")}
        torch.save(old, tmp_path / "old.pth")
        report = load_pretrained(torchvision.models.resnet18(weights=None), tmp_path / "old.pth")
    assert report.warnings == [] and str(report).startswith("loaded 100 of 120 tensors")


@pytest.mark.slow
def test_a_run_records_the_weights_sha256(tmp_path, tiny_synthfer, source_sd):
    import hashlib
    import json
    from adadf_core.config import make_config, resolve_config
    from adadf_core.engine.train import fit
    path = tmp_path / "w.pth"
    torch.save({k: (v + 0.5 if k.endswith("running_mean") else v) for k, v in source_sd.items()}, path)
    cfg = resolve_config(make_config("synthfer", data_root=str(tiny_synthfer), method="baseline", epochs=1,
                                     image_size=32, batch_size=16, pretrained=str(path), progress=False,
                                     run_dir=str(tmp_path / "run"), num_workers=0))
    fit(cfg)
    env = json.loads((tmp_path / "run" / "config.json").read_text())["environment"]
    assert env["weights"] == str(path) and env["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_channels_last_default_follows_device_and_image_size():
    from adadf_core.config import make_config as _make, resolve_config
    from adadf_core.runtime.device import CPU_CHANNELS_LAST_FROM, use_channels_last
    def make_config(*a, **k):
        return resolve_config(_make(*a, **k))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert CPU_CHANNELS_LAST_FROM == 160
    assert not use_channels_last(cpu, make_config("synthfer"))                      # 48 px: contiguous
    assert not use_channels_last(cpu, make_config("raf", "paper"))                  # 100 px
    assert use_channels_last(cpu, make_config("raf", "official"))                   # 224 px
    assert use_channels_last(cpu, make_config("synthfer", image_size=160))
    assert not use_channels_last(cpu, make_config("raf", "official", channels_last=False))   # a choice wins
    assert use_channels_last(cpu, make_config("synthfer", channels_last=True))
    assert use_channels_last(cuda, make_config("synthfer")) and not use_channels_last(cpu)
