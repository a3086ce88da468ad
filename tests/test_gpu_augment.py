"""Device-side augmentation (issue 12, ``augment_device="cuda"``): its ops on hand-made images, per-sample
randomness and erasing. The functions are device-agnostic, so they run here on the CPU."""
import pytest
import torch

from adadf_core.data import gpu_augment as G
from adadf_core.config import make_config, resolve_config
from adadf_core.engine.loaders import device_augment


def test_colour_ops_on_hand_made_pixels():
    x = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    half = torch.tensor([0.5])
    assert torch.allclose(G._colour("invert", x, half), 1 - x)
    assert torch.allclose(G._colour("solarize", x, half)[0, :, 0, 0], torch.tensor([0.1, 0.5, 0.1]))  # >= 0.5 inverted
    # posterize at m/10 = 0.5: 8 - 2 = 6 bits, steps of 4 grey levels: 0.1*255 = 25.5 -> 24
    assert G._colour("posterize", x, half)[0, 0, 0, 0] * 255 == pytest.approx(24.0)
    # brightness factor 1 + 0.9 * 0.5 = 1.45, clipped at 1
    assert torch.allclose(G._colour("brightness", x, half)[0, :, 0, 0], torch.tensor([0.145, 0.725, 1.0]))
    ramp = torch.linspace(0.2, 0.6, 4).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    stretched = G._colour("auto_contrast", ramp, half)
    assert float(stretched.min()) == pytest.approx(0.0) and float(stretched.max()) == pytest.approx(1.0)


def test_zero_magnitude_geometry_is_the_identity():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    op = torch.tensor([G.OPS.index(n) for n in G.GEOMETRIC_OPS[:4]])
    theta = G._affine(op, torch.zeros(4), torch.ones(4, dtype=torch.bool))
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    assert torch.allclose(torch.nn.functional.grid_sample(x, grid, align_corners=False), x, atol=1e-5)


def test_parameters_are_drawn_per_sample():
    torch.manual_seed(0)
    same = torch.full((16, 3, 12, 12), 120, dtype=torch.uint8)
    same[:, 0, :, :6] = 30                                   # not symmetric: flips show
    out = G.DeviceAugment()(same)
    assert out.dtype == torch.float32 and out.shape == (16, 3, 12, 12)
    distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
    assert len(distinct) > 8                                 # one batch, many different augmentations


def test_erasing_boxes_stay_within_the_area_range():
    torch.manual_seed(1)
    x = torch.ones(64, 3, 20, 20)
    out = G.random_erasing(x, p=1.0)
    erased = (out[:, 0] == 0).float().mean((1, 2))
    assert bool((erased > 0).all()) and float(erased.max()) <= 0.25 + 0.05
    assert torch.equal(G.random_erasing(x, p=0.0), x)


def test_device_augmentation_needs_cuda_and_the_official_recipe():
    with pytest.raises(ValueError, match="augment_device='cuda' is not valid on cpu"):
        device_augment(resolve_config(make_config("raf", augment_device="cuda")), "cpu")
    assert device_augment(resolve_config(make_config("raf")), "cpu") is None
    with pytest.raises(ValueError, match="expected uint8 batches"):
        G.DeviceAugment()(torch.zeros(2, 3, 4, 4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_augmentation_runs_on_the_gpu():
    x = torch.randint(0, 256, (32, 3, 224, 224), dtype=torch.uint8, device="cuda")
    out = G.DeviceAugment()(x)
    assert out.device.type == "cuda" and out.dtype == torch.float32 and torch.isfinite(out).all()
