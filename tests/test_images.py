"""The one image decoder (adadf_core.data.images) on hand-made files, and its two callers agreeing."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adadf_core.data import images

ORIENTATION = 0x0112


def rgb(path):
    image = images.decode_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def save_with_orientation(path, array, orientation):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=95)
    return path


def red_left_blue_right(width=40, height=20):
    array = np.zeros((height, width, 3), np.uint8)
    array[:, :width // 2] = (220, 20, 20)
    array[:, width // 2:] = (20, 20, 220)
    return array


# ------------------------------------------------------------------------------------- orientation
def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    # orientation 6: the camera was turned; the viewer rotates the stored pixels 90 degrees clockwise,
    # so the stored left half (red) becomes the top half
    path = save_with_orientation(tmp_path / "r6.jpg", red_left_blue_right(), 6)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    out = rgb(path)
    assert out.shape == (40, 20, 3)
    np.testing.assert_allclose(out[5, 10], (220, 20, 20), atol=30)      # top: red
    np.testing.assert_allclose(out[34, 10], (20, 20, 220), atol=30)     # bottom: blue
    assert images.decoded_size(path) == (20, 40)


def test_orientation_3_turns_the_image_upside_down_and_keeps_its_size(tmp_path):
    path = save_with_orientation(tmp_path / "r3.jpg", red_left_blue_right(), 3)
    out = rgb(path)
    assert out.shape == (20, 40, 3) and images.decoded_size(path) == (40, 20)
    np.testing.assert_allclose(out[10, 5], (20, 20, 220), atol=30)      # left is blue now
    np.testing.assert_allclose(out[10, 34], (220, 20, 20), atol=30)


# ------------------------------------------------------------------------------------ transparency
def test_rgba_is_composited_on_white_exactly(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 0, 50)
    rgba[:, 0, 3], rgba[:, 1, 3], rgba[:, 2, 3] = 0, 128, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = rgb(tmp_path / "t.png")
    # round((c * a + 255 * (255 - a)) / 255): alpha 128 over 200 -> 57985 / 255 = 227.4 -> 227
    assert out[0, 0].tolist() == [255, 255, 255]          # alpha 0: white (the old datasets decoder: black)
    assert out[0, 1].tolist() == [227, 127, 152]          # alpha 128 (old: 100, 0, 25)
    assert out[0, 2].tolist() == [200, 0, 50]             # alpha 255: unchanged
    image, note = images.decode_image_with_note(tmp_path / "t.png")
    assert note == "converted from RGBA (alpha composited on white) to RGB"


def test_white_compositing_matches_pillow_alpha_composite_for_every_colour_and_alpha(tmp_path):
    c, a = np.meshgrid(np.arange(256), np.arange(256))
    rgba = np.stack([c, 255 - c, c // 2, a], axis=-1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "all.png")
    on_white = Image.alpha_composite(Image.new("RGBA", (256, 256), (255, 255, 255, 255)),
                                     Image.fromarray(rgba, "RGBA")).convert("RGB")
    np.testing.assert_array_equal(rgb(tmp_path / "all.png"), np.asarray(on_white))


def test_la_and_palette_transparency_are_composited_on_white(tmp_path):
    la = np.array([[[50, 0], [50, 255]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert rgb(tmp_path / "la.png")[0].tolist() == [[255, 255, 255], [50, 50, 50]]
    pal = Image.fromarray(np.array([[0, 1, 1]], np.uint8), "P")
    pal.putpalette([200, 0, 0, 0, 150, 0] + [0] * 762)
    pal.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P" and "transparency" in check.info
    assert rgb(tmp_path / "p.png")[0].tolist() == [[255, 255, 255], [0, 150, 0], [0, 150, 0]]


# ---------------------------------------------------------------------------------- other modes
def test_sixteen_bit_grey_is_scaled_by_1_over_257(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode.startswith("I")
    out = rgb(tmp_path / "g16.png")
    # round(value / 257): 32768 / 257 = 127.502 -> 128 (PIL's own conversion clips it to 255, white)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out == out[..., :1]).all()
    assert images.decode_image_with_note(tmp_path / "g16.png")[1].startswith("converted from I")


def test_32_bit_integer_grey_uses_the_same_16_bit_scale(tmp_path):
    Image.fromarray(np.array([[-5, 32768, 70000]], np.int32), "I").save(tmp_path / "g32.tif")
    with Image.open(tmp_path / "g32.tif") as check:
        assert check.mode == "I"
    assert rgb(tmp_path / "g32.tif")[0, :, 0].tolist() == [0, 128, 255]   # clipped to 0..65535 first


def test_grey_and_cmyk_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "g.png")
    out = rgb(tmp_path / "g.png")
    assert out.shape == (4, 5, 3) and (out == 77).all()
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    out = rgb(tmp_path / "c.jpg")
    assert out.shape == (4, 6, 3)
    np.testing.assert_allclose(out[2, 3], (255, 0, 0), atol=10)
    assert images.decode_image_with_note(tmp_path / "c.jpg")[1] == "converted from CMYK to RGB"


def test_an_rgb_file_is_returned_unchanged_with_an_empty_note(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    image, note = images.decode_image_with_note(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(image), array)
    assert note == ""


# ---------------------------------------------------------------------------------------- errors
def test_unreadable_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(images.ImageDecodeError, match=r"broken\.jpg: not a readable image") as info:
        images.decode_image(bad)
    assert isinstance(info.value, ValueError) and info.value.path == bad
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        images.decode_image(tmp_path / "missing.png")
    with pytest.raises(images.ImageDecodeError, match=r"broken\.jpg"):
        images.decoded_size(bad)


def test_callers_keep_their_error_types(tmp_path):
    from adadf_core.data import align
    from adadf_core.data.labelfiles import DatasetError, DatasetNotFoundError
    from adadf_core.data.cache import decode_image

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cannot decode image .*broken\.png: UnidentifiedImageError"):
        decode_image(bad)
    with pytest.raises(DatasetNotFoundError, match=r"image .*gone\.png not found"):
        decode_image(tmp_path / "gone.png")
    with pytest.raises(ValueError, match=r"gone\.png: not a readable image"):
        align.load_rgb(tmp_path / "gone.png")


# ------------------------------------------------------------------------------- the two callers
def test_datasets_and_align_decode_every_kind_of_file_identically(tmp_path):
    from adadf_core.data import align
    from adadf_core.data.cache import decode_image

    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    save_with_orientation(tmp_path / "rotated.jpg", red_left_blue_right(), 8)
    Image.fromarray(np.array([[0, 1000, 32768, 65535]], np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(rgba[..., 0]).save(tmp_path / "grey.jpg")
    for path in sorted(tmp_path.iterdir()):
        from_datasets = np.asarray(decode_image(path))
        from_align, _ = align.load_rgb(path)
        assert from_datasets.dtype == from_align.dtype == np.uint8, path.name
        np.testing.assert_array_equal(from_datasets, from_align, err_msg=path.name)
    assert np.asarray(decode_image(tmp_path / "rotated.jpg")).shape == (40, 20, 3)
    assert np.asarray(decode_image(tmp_path / "g16.png"))[0, 2, 0] == 128


def test_the_decoded_image_store_accepts_exif_rotated_images(tmp_path):
    from adadf_core.data.dataset import load_split

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            save_with_orientation(tmp_path / split / c / "0.jpg", red_left_blue_right(), 6)
    ds = load_split("imagefolder", tmp_path, "train", image_size=100, progress=False)
    assert ds.raw_image(0).size == (20, 40)


def test_check_complete_spots_a_missing_end_marker(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    images.check_complete(tmp_path / "a.png")
    images.check_complete(tmp_path / "a.jpg")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:-12])      # without its IEND chunk
    with pytest.raises(images.ImageDecodeError, match=r"cut.png: not a readable image \(truncated: the PNG IEND"):
        images.check_complete(tmp_path / "cut.png")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:-2])
    with pytest.raises(images.ImageDecodeError, match=r"cut.jpg: .*JPEG end-of-image marker is missing"):
        images.check_complete(tmp_path / "cut.jpg")
