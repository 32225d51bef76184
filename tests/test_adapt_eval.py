"""Using trained models: load_model and predict, `facedapt adapt` to a folder of photos, and
`facedapt eval` on any dataset; all on the toy faces with a few steps."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import toy_plugin
from conftest import make_distribution, model_state, run_toy
from loguru import logger
from PIL import Image

import facedapt
from facedapt.cli import main
from facedapt.data.export import write_manifest
from facedapt.data.samples import YAW_BINS, Samples
from facedapt.data.splits import Domain
from facedapt.engine.adapt import adapt
from facedapt.engine.evaluate import confusion_matrix, predict_domain
from facedapt.engine.model_io import load_model
from facedapt.engine.results import summary_lines
from facedapt.engine.build import build_method, load_state
from facedapt.errors import CheckpointError, UsageError
from facedapt.plugin_manager import Plugins

FAST = ("data.target_subjects=[T00]", "eval.leakage_probe=false")
ADAPT = ["train.steps=3", "eval.leakage_probe=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, toy_plugins: Plugins) -> Path:
    run_dir = tmp_path_factory.mktemp("adapt_eval") / "run"
    run_toy(toy_plugins, run_dir, *FAST)
    return run_dir


@pytest.fixture(scope="module")
def toy() -> Samples:
    return toy_plugin.ToyFaces().load()


@pytest.fixture
def toy_cli(site: Path) -> Path:
    """The toy dataset as an installed plugin distribution, so `main()` (which loads plugins
    itself) finds it."""
    return make_distribution(site, "fd_toy", "0.1", "fd_toy", "from toy_plugin import facedapt_register_datasets\n")


def write_pngs(images: torch.Tensor, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(img[0].numpy()).save(paths[-1])
    return paths


def subject_images(samples: Samples, sid: str) -> tuple[torch.Tensor, torch.Tensor]:
    idx = samples.indices_of_subject(sid)
    return samples.images[idx], samples.expression[idx]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points loguru at the captured stderr; give later tests a working sink again."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *parts: str) -> str:
    """Exit 2 with one line (-q: no progress logging) holding every part."""
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("facedapt: error:"), err
    for part in parts:
        assert part in err, err
    return err


# -- model files and load_model -------------------------------------------------------------


def test_model_files_record_how_to_rebuild(trained: Path) -> None:
    for file in (trained / "source" / "model.pt", trained / "subjects" / "T00" / "model.pt"):
        state = torch.load(file, map_location="cpu", weights_only=True)
        assert state["build"] == {"num_subjects": 6, "image_shape": [1, 16, 16], "num_classes": 3}


def test_subject_model_predicts_what_the_engine_scored(trained: Path, toy: Samples) -> None:
    model = facedapt.load_model(trained / "subjects" / "T00")
    assert model.classes == ("neutral", "happy", "sad") and model.domain == "target"
    assert model.recipe.name == "pada" and model.info["kind"] == "adapted"
    images, labels = subject_images(toy, "T00")
    pred = torch.tensor([model.classes.index(p["expression"]) for p in model.predict(images)])
    engine = json.loads((trained / "subjects" / "T00" / "results.json").read_text())
    assert confusion_matrix(pred, labels, 3).tolist() == engine["confusion"]


def test_run_dir_gives_the_source_model(trained: Path, toy: Samples, toy_plugins: Plugins) -> None:
    model = load_model(trained)
    assert model.domain == "source" and model.path == trained / "source" / "model.pt"
    # The engine's own way: build from the recipe and data shapes, load the weights, predict.
    method = build_method(toy_plugins, model.recipe, 6, (1, 16, 16), 3)
    load_state(method, model_state(trained / "source" / "model.pt"))
    domain = Domain(toy, torch.arange(len(toy)))
    expected = predict_domain(method, domain, torch.device("cpu"), 64, model.amp, domain_name="source")["pred"]
    got = [model.classes.index(p["expression"]) for p in model.predict(toy.images)]
    assert got == expected.tolist()


def test_predict_outputs_and_inputs(trained: Path, toy: Samples, tmp_path: Path) -> None:
    model = load_model(trained / "subjects" / "T00" / "model.pt")
    images, _ = subject_images(toy, "T00")
    out = model.predict(images)
    assert len(out) == len(images)
    for row in out:
        assert set(row) == {"expression", "probabilities", "yaw"}
        assert set(row["probabilities"]) == set(model.classes)
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert row["yaw"] in YAW_BINS
    # Files decode to the same pixels (lossless PNG at the model's size): same predictions.
    paths = write_pngs(images, tmp_path / "png")
    assert model.predict(paths) == out
    single = model.predict(str(paths[0]))  # a batch of one: the same up to float rounding
    assert single[0]["expression"] == out[0]["expression"]
    assert single[0]["probabilities"] == pytest.approx(out[0]["probabilities"], abs=1e-5)
    # One [C, H, W] image; RGB at another size is converted and resized.
    assert model.predict(images[0])[0]["expression"] == out[0]["expression"]
    rgb = images[:4].repeat(1, 3, 2, 2)  # [4, 3, 32, 32]
    assert len(model.predict(rgb)) == 4


def test_load_model_refuses_non_runs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model.pt"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing")


# -- photos and adapt ------------------------------------------------------------------------


def test_photos_reader(toy: Samples, tmp_path: Path, toy_plugins: Plugins) -> None:
    images, _ = subject_images(toy, "T01")
    write_pngs(images[:5], tmp_path / "me" / "day1")
    write_pngs(images[5:8], tmp_path / "me" / "day2")
    (tmp_path / "me" / "notes.txt").write_text("not a photo")
    samples = toy_plugins.registry("datasets").get("photos")(tmp_path / "me", image_size=16, channels=1,
                                                             subject="alice", detect=False).load()
    assert len(samples) == 8 and samples.subject_ids == ("alice",)
    assert (samples.expression == -1).all() and torch.isnan(samples.yaw).all()
    assert [p["problem"] for p in samples.problems] == ["not an image file; ignored"]


def test_photos_reader_crops_the_face_of_each_photo(tmp_path: Path, toy_plugins: Plugins,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With detection (the default) each photo gives its largest face, cropped as predict crops
    it; a photo without a face is left out and listed; without OpenCV, one line."""
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'facedapt[detect]')")
    from facedapt.engine.faces import find_faces

    face = toy_plugins.registry("datasets").get("synthetic")(preset="tiny").render(torch.tensor([2])).images[0]
    canvas = Image.new("RGB", (200, 150), (120, 120, 120))
    canvas.paste(Image.fromarray(face.permute(1, 2, 0).numpy()).resize((120, 120), Image.BICUBIC), (40, 15))
    (tmp_path / "me").mkdir()
    canvas.save(tmp_path / "me" / "face.png")
    Image.new("RGB", (160, 120), (200, 200, 200)).save(tmp_path / "me" / "wall.png")
    crops = find_faces(tmp_path / "me" / "face.png")
    if not crops:
        pytest.skip("this OpenCV's cascade finds no face in the test photo")
    reader = toy_plugins.registry("datasets").get("photos")
    samples = reader(tmp_path / "me", image_size=32, channels=3).load()
    assert len(samples) == 1 and samples.paths[0].endswith("face.png")
    assert [p["problem"] for p in samples.problems] == ["no face found; left out"]
    # The crop, not the whole photo: the same pixels as predict's face crop, resized.
    expected = torch.from_numpy(np.array(Image.fromarray(crops[0].pixels.permute(1, 2, 0).numpy())
                                           .resize((32, 32), Image.LANCZOS))).permute(2, 0, 1)
    whole = torch.from_numpy(np.array(canvas.crop((25, 0, 175, 150)).resize((32, 32), Image.LANCZOS))).permute(2, 0, 1)
    got = samples.images[0].int()
    assert (got - expected.int()).abs().float().mean() < (got - whole.int()).abs().float().mean()
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UsageError, match="OpenCV.*detect: false"):
        reader(tmp_path / "me", image_size=32, channels=3, detect=True).load()


def test_adapt_writes_a_personalized_model(trained: Path, toy: Samples, tmp_path: Path,
                                           toy_plugins: Plugins) -> None:
    images, _ = subject_images(toy, "T01")
    write_pngs(images, tmp_path / "photos")
    done = adapt(trained, tmp_path / "photos", subject="alice", overrides=ADAPT, plugins=toy_plugins, detect=False)
    assert done.run_dir == trained / "personalized" / "alice" and done.photos == len(images)
    assert done.model_file == done.run_dir / "model.pt"
    assert done.results["per_subject"]["alice"]["n"] == 0  # unlabelled: nothing to score
    assert summary_lines(done.results) == ["adapted to 1 target(s) without labels (alice): no accuracy to report"]
    personal = load_model(done.run_dir)
    assert personal.info["kind"] == "adapted" and personal.info["target"] == "alice"
    assert personal.domain == "target"
    before, after = model_state(trained / "source" / "model.pt"), model_state(done.model_file)
    changed = [f"{n}.{k}" for n in before for k in before[n] if not torch.equal(before[n][k], after[n][k])]
    assert any("running_mean_target" in k for k in changed)  # AdaBN fitted the person's statistics
    assert any(k.endswith("weight") for k in changed)  # and adaptation steps moved weights
    assert len(personal.predict(images)) == len(images)


def test_adapt_cli(trained: Path, toy: Samples, tmp_path: Path, toy_cli: Path, capsys: pytest.CaptureFixture) -> None:
    images, _ = subject_images(toy, "T02")
    write_pngs(images, tmp_path / "photos")
    out = tmp_path / "bob"
    assert main(["adapt", "--from", str(trained), "--images", str(tmp_path / "photos"), "--out", str(out),
                 "--subject", "bob", "--no-detect", *ADAPT]) == 0
    assert str(out / "model.pt") in capsys.readouterr().out
    assert load_model(out).info["target"] == "bob"


def test_adapt_bad_inputs(trained: Path, tmp_path: Path, toy_cli: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["adapt", "--from", str(trained), "--images", str(tmp_path / "nope")], str(tmp_path / "nope"))
    one_line_error(capsys, ["adapt", "--from", str(trained), "--images", str(empty), "--out", str(tmp_path / "o"),
                            "--no-detect"], str(empty), "no photos images")
    assert not (tmp_path / "o").exists()  # nothing half-made
    one_line_error(capsys, ["adapt", "--from", str(tmp_path), "--images", str(empty)], "not a run directory")


# -- eval ------------------------------------------------------------------------------------


def test_eval_on_a_manifest_matches_direct_accuracy(trained: Path, toy: Samples, tmp_path: Path, toy_cli: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    manifest = write_manifest(toy, tmp_path / "export")
    checkpoint = trained / "subjects" / "T00"
    assert main(["eval", "--checkpoint", str(checkpoint), "--dataset", "manifest", "--root", str(manifest.parent),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    model = load_model(checkpoint)
    pred = np.array([model.classes.index(p["expression"]) for p in model.predict(toy.images)])
    assert res["accuracy"] == pytest.approx(float((pred == toy.expression.numpy()).mean()))
    assert res["n"] == len(toy) and len(res["per_subject"]) == 6
    assert {"method", "seed", "selection", "target_accuracy", "target_uar", "target_macro_f1", "per_yaw",
            "confusion"} <= set(res)
    assert set(res["per_yaw"]) == {"-30", "0", "30"}
    assert main(["eval", "--checkpoint", str(checkpoint), "--dataset", "manifest", "--root", str(manifest.parent)]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {res['accuracy']:.4f}" in text and "yaw -30" in text


def test_eval_bad_inputs(trained: Path, tmp_path: Path, toy_cli: Path, capsys: pytest.CaptureFixture) -> None:
    one_line_error(capsys, ["eval", "--checkpoint", str(trained), "--dataset", "manifst", "--root", str(tmp_path)],
                   "manifest")
    one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path), "--dataset", "manifest", "--root", str(tmp_path)],
                   "no model.pt")
    one_line_error(capsys, ["eval", "--checkpoint", str(trained), "--dataset", "manifest", "--root",
                            str(tmp_path / "nope")], "not found")


def test_old_model_file_without_build_is_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "old"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("personalized"))
    state = torch.load(run / "source" / "model.pt", weights_only=True)
    del state["build"]
    torch.save(state, run / "source" / "model.pt")
    with pytest.raises(CheckpointError, match="no build metadata"):
        load_model(run)


def test_evaluation_with_features_encodes_each_image_once(trained: Path, toy: Samples, toy_plugins: Plugins) -> None:
    """Predictions with features come from one forward pass per batch and equal the plain ones."""
    model = load_model(trained)
    method = build_method(toy_plugins, model.recipe, 6, (1, 16, 16), 3)
    load_state(method, model_state(trained / "source" / "model.pt"))
    domain = Domain(toy, torch.arange(len(toy)))
    calls = []
    encode = method.encode
    method.encode = lambda images, name: calls.append(len(images)) or encode(images, name)  # type: ignore[method-assign]
    plain = predict_domain(method, domain, torch.device("cpu"), 64, model.amp, domain_name="source")
    assert sum(calls) == len(toy)
    calls.clear()
    both = predict_domain(method, domain, torch.device("cpu"), 64, model.amp, domain_name="source", features=True)
    assert sum(calls) == len(toy)
    assert torch.equal(both["pred"], plain["pred"])
    assert both["feat_expression"].shape[0] == len(toy) and "feat_pose" in both


def test_library_adapt_is_the_cli_adapt(trained: Path, toy: Samples, tmp_path: Path, toy_cli: Path) -> None:
    images, _ = subject_images(toy, "T01")
    write_pngs(images, tmp_path / "photos")
    done = facedapt.adapt(str(trained), str(tmp_path / "photos"), subject="carol", out=str(tmp_path / "carol"),
                          overrides=ADAPT, detect=False, report=False)
    assert done.model_file == tmp_path / "carol" / "model.pt" and done.photos == len(images)
    assert facedapt.load_model(str(done.model_file)).info["target"] == "carol"
    assert not (tmp_path / "carol" / "report.md").exists()
