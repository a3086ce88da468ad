"""Using a trained run: `adadf predict` / `load_predictor` reproduce the run's own test-time evaluation,
do not depend on the batch, and list photographs without a face instead of failing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adadf_core import cli
from adadf_core.config import make_config
from adadf_core.engine.loaders import load_splits
from adadf_core.inference.predict import load_predictor, SYNTHFER_NOTE
from adadf_core.engine.train import fit

pytestmark = pytest.mark.slow


def tiny_run(root, run_dir, method="adadf", **kw):
    base = dict(image_size=32, recipe="light", batch_size=16, epochs=1, max_train_samples=32, max_test_samples=24,
                progress=False, track_samples=0, seed=1, device="cpu")
    cfg = make_config("synthfer", "official", method=method, data_root=str(root), run_dir=str(run_dir),
                      **{**base, **kw})
    return fit(cfg)


@pytest.fixture(scope="module")
def adadf_run(tiny_synthfer, tmp_path_factory):
    import shutil
    folder = tmp_path_factory.mktemp("predict")
    yield tiny_run(tiny_synthfer, folder / "adadf")
    shutil.rmtree(folder, ignore_errors=True)


def test_predictions_are_the_runs_own_evaluation(adadf_run):
    test_set = load_splits(adadf_run.config, with_train=False)["test"]
    paths = [test_set.root / name for name in test_set.names]
    predictor = load_predictor(adadf_run.path)
    probs = predictor(paths)
    assert probs.shape == (24, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert predictor.class_names == adadf_run.class_names
    # the last-epoch evaluation's predictions on the same images, in the same order
    assert np.array_equal(probs.argmax(1), adadf_run.features["preds"])


def test_a_run_trained_channels_last_is_predicted_channels_last(tiny_synthfer, tmp_path):
    """From 160 px the CPU trains and evaluates channels-last; the predictor does too, so it still reproduces
    the run's own evaluation."""
    run = tiny_run(tiny_synthfer, tmp_path / "large", image_size=160, max_train_samples=16, max_test_samples=8)
    assert run.environment["channels_last"] is True
    test_set = load_splits(run.config, with_train=False)["test"]
    predictor = load_predictor(run.path)
    assert predictor.channels_last
    probs = predictor([test_set.root / name for name in test_set.names])
    assert np.array_equal(probs.argmax(1), run.features["preds"])


def test_a_prediction_does_not_depend_on_the_batch(adadf_run, tiny_synthfer, tmp_path):
    slm = tiny_run(tiny_synthfer, tmp_path / "slm", method="slm_aea")
    assert slm.config.slm_eval_mean == "batch"            # the faithful, batch-dependent evaluation
    test_set = load_splits(adadf_run.config, with_train=False)["test"]
    paths = [test_set.root / name for name in test_set.names[:9]]
    for run in (adadf_run, slm):
        predictor = load_predictor(run.path)
        together = predictor(paths, batch_size=9)
        alone = np.concatenate([predictor([p]) for p in paths])
        mixed = predictor(paths[::-1], batch_size=4)[::-1]
        assert np.allclose(together, alone, atol=1e-6) and np.allclose(together, mixed, atol=1e-6), run.path
    assert "running mean" in load_predictor(slm.path).note and load_predictor(adadf_run.path).note == SYNTHFER_NOTE


def _copy_test_faces(run, folder, n: int):
    """The first ``n`` test images of ``run``'s data set, copied flat into ``folder`` (a user's own folder)."""
    test_set = load_splits(run.config, with_train=False)["test"]
    folder.mkdir()
    for name in test_set.names[:n]:
        (folder / name.split("/")[-1]).write_bytes((test_set.root / name).read_bytes())
    return folder


def test_cli_predict_prints_top_k_and_writes_the_csv(adadf_run, tmp_path, capsys):
    folder = _copy_test_faces(adadf_run, tmp_path / "mine", 5)
    (folder / ".DS_Store").write_bytes(b"\0")
    out_csv = tmp_path / "p.csv"
    assert cli.main(["predict", str(adadf_run.path / "best_model.safetensors"), str(folder), "--csv", str(out_csv),
                     "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "best-epoch weights" in out and out.count(".jpg: ") == 5
    assert f"note: {SYNTHFER_NOTE}" in out                # a SynthFER model says what it has seen, before any prediction
    assert out.index("note:") < out.index(".jpg: ")
    table = pd.read_csv(out_csv)
    probs = table[[f"p_{c}" for c in adadf_run.class_names]].to_numpy()
    assert len(table) == 5 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert list(table["prediction"]) == [adadf_run.class_names[i] for i in probs.argmax(1)]


def test_predict_bad_input_is_a_one_line_error(adadf_run, tmp_path, capsys):
    assert cli.main(["predict", str(adadf_run.path), str(tmp_path / "nope.jpg")]) == 2
    assert "nope.jpg does not exist" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_an_unreadable_file_is_listed_and_the_rest_classified_and_only_nothing_read_fails(adadf_run, tmp_path,
                                                                                           capsys):
    folder = _copy_test_faces(adadf_run, tmp_path / "mixed", 2)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    assert cli.main(["predict", str(adadf_run.path), str(folder), "--csv", str(tmp_path / "p.csv")]) == 0
    captured = capsys.readouterr()
    assert "broken.jpg: unreadable" in captured.out and "1 of 3 image(s) could not be classified" in captured.err
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 3 and table["prediction"].notna().sum() == 2
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "broken.jpg").write_bytes(b"not a jpeg")
    assert cli.main(["predict", str(adadf_run.path), str(only_bad)]) == 1


@pytest.mark.align
def test_align_finds_the_face_in_a_photograph_and_lists_a_photo_without_one(adadf_run, tmp_path, capsys):
    from PIL import Image

    from adadf_core.data import align
    if not align.mtcnn_available():
        pytest.skip("the align extra (mtcnn) is not installed")
    photos = align.example_photos()
    name, photo = next(iter(photos.items()))
    Image.fromarray(photo).save(tmp_path / f"{name}.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    assert cli.main(["predict", str(adadf_run.path), str(tmp_path), "--align", "--csv", str(tmp_path / "a.csv")]) == 0
    captured = capsys.readouterr()
    assert "blank.png: no face found" in captured.out and "1 of 2 image(s) could not be classified" in captured.err
    table = pd.read_csv(tmp_path / "a.csv").set_index("status")
    assert table.loc["ok", "prediction"] in adadf_run.class_names


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_and_carries_its_metadata(adadf_run, tmp_path, fmt, capsys):
    import torch

    from adadf_core.inference.export import read_metadata
    out = tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt'}"
    assert cli.main(["export", str(adadf_run.path), "--format", fmt, "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["class_names"] == adadf_run.class_names and meta["image_size"] == 32 and not meta["tencrop"]
    assert meta["resize"].startswith("bilinear") and "trained on SynthFER" in meta["note"]
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = adadf_run.load_model().forward_target(x)["logits"].numpy()
    if fmt == "onnx":
        import onnx
        import onnxruntime
        got = onnxruntime.InferenceSession(str(out)).run(None, {"images": x.numpy()})[0]
        weights = sum(int(np.prod(t.dims)) for t in onnx.load(str(out)).graph.initializer)
        full = sum(p.numel() for p in adadf_run.load_model().parameters())
        assert weights < 0.8 * full                  # the auxiliary branch and head 1 are left out
    else:
        got = torch.jit.load(str(out))(x).detach().numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_sfew_predictions_average_the_ten_crops_as_evaluation_does(sfew_root, tmp_path):
    cfg = make_config("sfew", "official", data_root=str(sfew_root), run_dir=str(tmp_path / "run"),
                      image_size=32, recipe="light", batch_size=4, epochs=1, progress=False, track_samples=0,
                      cd_source="train_pass", device="cpu")
    run = fit(cfg)
    test_set = load_splits(run.config, with_train=False)["test"]
    probs = load_predictor(run.path)([test_set.root / n for n in test_set.names])
    assert probs.shape == (7, 7)                                   # one row per image, not per crop
    assert np.array_equal(probs.argmax(1), run.features["preds"])
