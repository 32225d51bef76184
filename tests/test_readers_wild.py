"""FER2013, RAF-DB, the generic manifest and image-folder readers, inspect and export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from facedapt_plugins.datasets.readers import (
    BU3DFE,
    FER2013,
    KDEF,
    RAFDB,
    ImageFolder,
    Manifest,
    MultiPIE,
)

from facedapt.data import EXPRESSIONS
from facedapt.data.export import write_manifest
from facedapt.data.inspect import format_summary, summarize
from facedapt.errors import DataError

try:
    import fixtures_layouts as L
except ImportError:  # tests/ collected as a package
    from tests import fixtures_layouts as L


def names(samples) -> list[str | None]:
    return [EXPRESSIONS[e] if e >= 0 else None for e in samples.expression.tolist()]


def test_fer2013_rows(tmp_path: Path) -> None:
    samples = FER2013(L.make_fer2013(tmp_path), image_size=32, channels=1).load()
    assert samples.images.shape == (5, 1, 32, 32)
    assert names(samples) == ["anger", "happy", "neutral", "happy", "fear"]
    assert samples.subject_ids == ("unknown",)
    assert not samples.has_pose and torch.isnan(samples.yaw).all()
    assert samples.paths[0].endswith("fer2013.csv:2")  # file:line names each row


def test_fer2013_pixels_decode_exactly(tmp_path: Path) -> None:
    samples = FER2013(L.make_fer2013(tmp_path), image_size=48, channels=1).load()
    expected = torch.tensor([int(v) for v in L.fer_pixels(0).split()], dtype=torch.uint8).view(48, 48)
    assert torch.equal(samples.images[0, 0], expected)


def test_fer2013_usage_and_csv_as_root(tmp_path: Path) -> None:
    root = L.make_fer2013(tmp_path)
    samples = FER2013(root / "fer2013.csv", usage=["PublicTest", "PrivateTest"]).load()
    assert names(samples) == ["neutral", "happy"]


def test_rafdb_aligned_and_original(tmp_path: Path) -> None:
    root = L.make_rafdb(tmp_path)
    aligned = RAFDB(root).load()
    assert [Path(p).name for p in aligned.paths] == ["train_00001_aligned.jpg", "train_00002_aligned.jpg",
                                                    "test_0001_aligned.jpg", "test_0002_aligned.jpg"]
    assert names(aligned) == ["sad", "surprise", "happy", "neutral"]
    assert aligned.subject_ids == ("unknown",) and not aligned.has_pose
    original = RAFDB(root, images="original", partition="test").load()
    assert [Path(p).name for p in original.paths] == ["test_0001.jpg", "test_0002.jpg"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest(tmp_path: Path, fmt: str) -> None:
    root = L.make_manifest(tmp_path, fmt)
    samples = Manifest(root, path=f"manifest.{fmt}", image_size=16).load()
    assert names(samples) == ["happy", "surprise", None]  # "3" is an index: surprise
    assert [samples.subject_of(i) for i in range(3)] == ["p1", "p2", "unknown"]
    assert samples.yaw[0] == 30 and samples.yaw[1] == -15 and math.isnan(samples.yaw[2])
    # landmarks follow the crop and resize: a.png 8x8 -> x2; b.jpg 16x8 cropped at x=4, x2
    assert samples.landmarks[0].tolist() == [[2.0, 4.0], [6.0, 8.0]]
    assert samples.landmarks[1].tolist() == [[0.0, 0.0], [16.0, 16.0]]
    assert torch.isnan(samples.landmarks[2]).all()
    train = Manifest(root, path=f"manifest.{fmt}", split="train").load()
    assert len(train) == 2


def test_manifest_file_as_root(tmp_path: Path) -> None:
    root = L.make_manifest(tmp_path)
    assert len(Manifest(root / "manifest.csv").load()) == 3


def test_image_folder_with_pattern(tmp_path: Path) -> None:
    root = L.make_image_folder(tmp_path)
    samples = ImageFolder(root, pattern=r"(?P<subject>s\d+)_yaw(?P<yaw>[-+]?\d+)").load()
    got = {Path(p).name: (names(samples)[i], samples.subject_of(i), float(samples.yaw[i]))
           for i, p in enumerate(samples.paths)}
    assert got == {
        "s01_yaw+30.png": ("happy", "s01", 30.0),
        "s02_yaw-15.jpg": ("anger", "s02", -15.0),  # "angry" folder
        "s01_yaw0.bmp": ("neutral", "s01", 0.0),  # "Neutral": case-insensitive
        "s03_yaw90.png": ("surprise", "s03", 90.0),  # "surprised"
    }
    assert [Path(p["path"]).name for p in samples.problems] == ["sad"]  # empty expression folder


def test_image_folder_without_pattern(tmp_path: Path) -> None:
    samples = ImageFolder(L.make_image_folder(tmp_path)).load()
    assert samples.subject_ids == ("unknown",) and not samples.has_pose


def test_image_folder_unknown_folder_and_map(tmp_path: Path) -> None:
    root = L.make_image_folder(tmp_path)
    L.image(root / "smiling" / "x.png")
    with pytest.raises(DataError, match=r"x\.png: folder 'smiling' is not an expression"):
        ImageFolder(root).load()
    samples = ImageFolder(root, expression_map={"smiling": "happy"}).load()
    assert names(samples).count("happy") == 2


# --------------------------------------------------------------------------- inspect


def test_summarize_keys_and_counts(tmp_path: Path) -> None:
    summary = summarize(KDEF(L.make_kdef(tmp_path), on_bad_image="skip").load())
    assert list(summary) == ["num_images", "expressions", "subjects", "poses", "problems"]
    assert summary["num_images"] == 8
    assert summary["expressions"] == {"neutral": 1, "happy": 2, "surprise": 1, "fear": 1, "anger": 3}
    assert summary["subjects"] == {"F01": 6, "M02": 2}
    assert summary["poses"] == {"-90": 1, "-45": 1, "0": 4, "45": 1, "90": 1}
    assert {Path(p["path"]).name for p in summary["problems"]} == {"AM02NES (2).JPG", "AM03"}
    json.dumps(summary)  # --json prints it as is


def test_summarize_unlabelled_and_no_pose(tmp_path: Path) -> None:
    summary = summarize(Manifest(L.make_manifest(tmp_path)).load())
    assert summary["expressions"] == {"happy": 1, "surprise": 1, "unlabelled": 1}
    summary = summarize(FER2013(L.make_fer2013(tmp_path)).load())
    assert summary["poses"] == {} and summary["subjects"] == {"unknown": 5}


def test_format_summary(tmp_path: Path) -> None:
    text = format_summary(summarize(KDEF(L.make_kdef(tmp_path)).load()))
    assert "images: 8" in text and "anger 3" in text and "F01 6" in text and "-90 1" in text
    assert "problems: 2" in text and "AM03: subject folder has no images" in text
    assert "no pose labels" in format_summary(summarize(FER2013(L.make_fer2013(tmp_path)).load()))


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("channels", [3, 1])
def test_export_round_trip(tmp_path: Path, channels: int) -> None:
    root = L.make_multipie(tmp_path)
    original = MultiPIE(root, image_size=16, channels=channels, expression_map={"squint": "disgust"},
                        cameras=["05_1", "11_0", "08_1"]).load()
    original.landmarks = torch.rand(len(original), 5, 2) * 16
    manifest = write_manifest(original, tmp_path / "out")
    assert manifest.read_text().splitlines()[0] == "path,expression,subject,yaw,pitch,capture,split,landmarks,intensity"
    back = Manifest(manifest.parent, image_size=16, channels=channels).load()
    assert torch.equal(back.images, original.images)  # PNG is lossless, size unchanged
    assert torch.equal(back.expression, original.expression)
    assert back.subject_ids == original.subject_ids and torch.equal(back.subject, original.subject)
    assert torch.equal(back.yaw.nan_to_num(99), original.yaw.nan_to_num(99))  # raised camera stays NaN
    assert torch.equal(back.capture, original.capture)
    assert torch.allclose(back.landmarks, original.landmarks)


def test_export_round_trip_intensity_and_unlabelled(tmp_path: Path) -> None:
    original = BU3DFE(L.make_bu3dfe(tmp_path), image_size=8).load()
    original.expression[0] = -1
    back = Manifest(write_manifest(original, tmp_path / "out").parent, image_size=8).load()
    assert torch.equal(back.expression, original.expression)
    assert torch.equal(back.intensity, original.intensity)
    assert back.landmarks is None


def test_threaded_decode_keeps_order_and_fails_on_first_bad_row(tmp_path: Path) -> None:
    rows = tuple((i % 7, "Training") for i in range(90))  # above the size that decodes in threads
    root = L.make_fer2013(tmp_path, rows=rows)
    samples = FER2013(root, image_size=48, channels=1).load()
    fer_to_canonical = [5, 6, 4, 1, 2, 3, 0]  # Angry Disgust Fear Happy Sad Surprise Neutral
    assert samples.expression.tolist() == [fer_to_canonical[i % 7] for i in range(90)]
    expected = torch.tensor([int(v) for v in L.fer_pixels(70).split()], dtype=torch.uint8).view(48, 48)
    assert torch.equal(samples.images[70, 0], expected)
    csv = root / "fer2013.csv"
    lines = csv.read_text().splitlines()
    for line_no in (40, 80):
        lines[line_no - 1] = "1,1 2 3,Training"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"fer2013\.csv:40: "):
        FER2013(root).load()
    assert [p["path"].rsplit(":", 1)[1] for p in FER2013(root, on_bad_image="skip").load().problems] == ["40", "80"]
