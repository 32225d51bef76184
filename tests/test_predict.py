"""`facedapt predict` and Model.predict_faces: faces found in photos (OpenCV's Haar cascade,
optional), cropped and predicted; with a model trained for a few steps on the synthetic faces."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from loguru import logger
from PIL import Image

import facedapt
from facedapt.cli import main
from facedapt.engine.faces import CASCADE, square_around
from facedapt.engine.run import Runner
from facedapt.errors import UsageError
from facedapt.plugin_manager import get_plugins
from facedapt.recipe.load import load_recipe

FACE_FIELDS = {"box", "detected", "expression", "probabilities", "yaw", "probability", "top"}
OUT_OF_DOMAIN = "learned expressions from synthetic faces only (trained on: synthetic)"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The synthetic data exactly as tests/test_docs.py uses it: one cache entry for both.
    loaded = load_recipe("pada", ["data.dataset={name: synthetic, preset: tiny}", "data.augment=[]",
                                  "model.backbone.width=8", "train.source_steps=4", "train.steps=2",
                                  "train.batch_size=8", "data.target_subjects={first: 1}", "eval.leakage_probe=false",
                                  "train.precision=fp32", "train.eval_every=0", "train.checkpoint_every=0",
                                  "eval.report=false"])  # not what these tests look at
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    Runner(loaded, run_dir=run_dir).execute()
    return run_dir


@pytest.fixture(scope="module")
def face_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic face, enlarged and pasted on a wider grey canvas: a photo-like file."""
    source = get_plugins().registry("datasets").get("synthetic")(preset="tiny")
    face = source.render(torch.tensor([2])).images[0].permute(1, 2, 0).numpy()
    canvas = Image.new("RGB", (200, 150), (120, 120, 120))
    canvas.paste(Image.fromarray(face).resize((120, 120), Image.BICUBIC), (40, 15))
    path = tmp_path_factory.mktemp("photos") / "face.png"
    canvas.save(path)
    return path


@pytest.fixture
def blank(tmp_path: Path) -> Path:
    path = tmp_path / "blank.png"
    Image.new("RGB", (160, 120), (200, 200, 200)).save(path)
    return path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points loguru at the captured stderr; give later tests a working sink again."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def no_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError


def astronaut_file(tmp_path: Path) -> Path:
    """scikit-image's bundled public-domain astronaut photo (NASA), if it is here offline."""
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (the astronaut photo)")
    try:
        rgb = data.astronaut()
    except Exception as exc:  # noqa: BLE001 - a download or a missing file: skip either way
        pytest.skip(f"scikit-image's astronaut photo is not available offline ({type(exc).__name__})")
    path = tmp_path / "astronaut.png"
    Image.fromarray(rgb).save(path)
    return path


def needs_cascade() -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'facedapt[detect]')")
    if not Path(cv2.data.haarcascades, CASCADE).is_file():
        pytest.skip(f"this OpenCV ({cv2.__version__}) ships no {CASCADE}")


def run_json(capsys: pytest.CaptureFixture, *argv: str, code: int = 0) -> tuple[list[dict], str]:
    """predict --json; returns the photos and stderr less the one out-of-domain warning that a
    model trained on synthetic faces gives (checked here)."""
    assert main(["-q", "predict", *argv, "--json"]) == code
    captured = capsys.readouterr()
    lines = captured.err.splitlines(keepends=True)
    warnings = [line for line in lines if OUT_OF_DOMAIN in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], captured.err
    return json.loads(captured.out), "".join(line for line in lines if line not in warnings)


def check_face(face: dict, classes: tuple[str, ...]) -> None:
    assert set(face) == FACE_FIELDS
    assert set(face["probabilities"]) == set(classes)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-5
    assert face["expression"] == max(face["probabilities"], key=face["probabilities"].get)
    assert face["probability"] == face["probabilities"][face["expression"]]
    assert face["top"][0][0] == face["expression"] and len(face["top"]) == 3
    assert [p for _, p in face["top"]] == sorted((p for _, p in face["top"]), reverse=True)
    assert face["yaw"] in (-90.0, -75.0, -60.0, -45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
    x, y, w, h = face["box"]
    assert w == h > 0 and x >= 0 and y >= 0


def test_whole_photo_json(model_dir: Path, face_photo: Path, capsys: pytest.CaptureFixture,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    no_opencv(monkeypatch)  # --no-detect must not need OpenCV
    photos, err = run_json(capsys, "--checkpoint", str(model_dir), "--no-detect", str(face_photo))
    assert err == ""
    assert len(photos) == 1 and photos[0]["image"] == str(face_photo)
    assert photos[0]["trained_on"] == ["synthetic"]
    (face,) = photos[0]["faces"]
    check_face(face, facedapt.load_model(model_dir).classes)
    assert face["box"] == [25, 0, 150, 150] and face["detected"] is False  # the center square


def test_library_matches_cli(model_dir: Path, face_photo: Path, capsys: pytest.CaptureFixture) -> None:
    model = facedapt.load_model(model_dir / "subjects" / "S001")
    got = model.predict_faces([face_photo], detect=False)
    capsys.readouterr()  # the library's own out-of-domain warning
    photos, _ = run_json(capsys, "--checkpoint", str(model_dir / "subjects" / "S001"), "--no-detect", str(face_photo))
    assert got == photos
    # The crop goes through predict's own resizing: the same as predicting the square region.
    square = torch.from_numpy(np.array(Image.open(face_photo).convert("RGB"))[0:150, 25:175]).permute(2, 0, 1)
    assert model.predict(square.contiguous())[0]["probabilities"] == pytest.approx(got[0]["faces"][0]["probabilities"])


def test_without_opencv_refuses_photos(model_dir: Path, face_photo: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No detector: one line and exit 2, not a prediction on each whole photo (a landscape too)."""
    no_opencv(monkeypatch)
    assert main(["predict", "--checkpoint", str(model_dir), "--json", str(face_photo)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("facedapt: error:") and "pip install 'facedapt[detect]'" in line and "--no-detect" in line
    with pytest.raises(UsageError, match="OpenCV"):
        facedapt.load_model(model_dir).predict_faces([face_photo])


def test_library_warns_once_on_photos(model_dir: Path, face_photo: Path, capsys: pytest.CaptureFixture) -> None:
    model = facedapt.load_model(model_dir)
    assert model.trained_on == ["synthetic"] and model.synthetic_only
    pixels = torch.from_numpy(np.array(Image.open(face_photo).convert("RGB"))).permute(2, 0, 1).contiguous()
    model.predict(pixels)  # a tensor may be a render: no warning
    assert OUT_OF_DOMAIN not in capsys.readouterr().err
    model.predict([face_photo])
    model.predict_faces([face_photo], detect=False)
    assert capsys.readouterr().err.count(OUT_OF_DOMAIN) == 1


def test_table_and_csv(model_dir: Path, face_photo: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["-q", "predict", "--checkpoint", str(model_dir), "--no-detect", str(face_photo)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["image", "face"] and "top 3" in out[0]
    assert len(out) == 3 and "25,0,150,150" in out[1] and out[2] == "model trained on: synthetic"
    assert main(["-q", "predict", "--checkpoint", str(model_dir), "--no-detect", "--csv", str(face_photo)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["image"] == str(face_photo) and rows[0]["width"] == "150"
    assert rows[0]["trained_on"] == "synthetic"
    probs = [float(v) for k, v in rows[0].items() if k.startswith("p_")]
    assert len(probs) == 7 and abs(sum(probs) - 1) < 1e-3


def test_no_face(model_dir: Path, blank: Path, capsys: pytest.CaptureFixture) -> None:
    needs_cascade()
    photos, err = run_json(capsys, "--checkpoint", str(model_dir), str(blank), code=2)
    assert photos == [{"image": str(blank), "trained_on": ["synthetic"], "faces": []}]
    assert err.strip() == f"no face found in {blank}"


@pytest.mark.parametrize("kind", ["not an image", "missing"])
def test_unreadable_image(kind: str, model_dir: Path, face_photo: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.png"
    if kind == "not an image":
        bad.write_text("hello", encoding="utf-8")
    assert main(["-q", "predict", "--checkpoint", str(model_dir), "--no-detect", str(face_photo), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # every photo is read before anything is printed
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("facedapt: error:") and str(bad) in err, err


def test_detects_the_astronaut(model_dir: Path, blank: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    needs_cascade()
    photo = astronaut_file(tmp_path)
    photos, err = run_json(capsys, "--checkpoint", str(model_dir), str(photo), str(blank))
    assert err.strip() == f"no face found in {blank}"  # exit 0: another photo had a face
    (face,) = photos[0]["faces"]
    check_face(face, facedapt.load_model(model_dir).classes)
    assert face["detected"] is True
    # Her face is around x 177..272, y 66..161 of the 512 x 512 photo: the crop holds it, with a margin.
    x, y, w, h = face["box"]
    assert x <= 180 and y <= 70 and x + w >= 270 and y + h >= 158 and w < 200


def test_square_around_stays_inside() -> None:
    assert square_around((10, 10, 20, 20), 100, 100, margin=0.25) == (5, 5, 30, 30)
    assert square_around((0, 0, 20, 30), 100, 100, margin=0.5) == (0, 0, 60, 60)  # clipped at the corner
    assert square_around((80, 40, 20, 20), 100, 50, margin=1.0) == (50, 0, 50, 50)  # at most the shorter side
