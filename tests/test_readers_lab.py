"""Readers of the pose- and subject-labelled datasets, on fixture trees in the official layouts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from facedapt_plugins.datasets import readers
from facedapt_plugins.datasets.readers import (
    BU3DFE,
    JAFFE,
    KDEF,
    CKPlus,
    MultiPIE,
    RaFD,
)

from facedapt.data import EXPRESSIONS, DatasetSource, Samples
from facedapt.registry import Registry

try:
    import fixtures_layouts as L
except ImportError:  # tests/ collected as a package
    from tests import fixtures_layouts as L


def by_name(samples: Samples) -> dict[str, dict]:
    """File name -> its labels, so assertions name specific official files."""
    out = {}
    for i, path in enumerate(samples.paths):
        e = int(samples.expression[i])
        out[Path(path).name] = {
            "expression": EXPRESSIONS[e] if e >= 0 else None,
            "subject": samples.subject_of(i),
            "yaw": None if math.isnan(float(samples.yaw[i])) else float(samples.yaw[i]),
            "capture": int(samples.capture[i]),
            "intensity": float(samples.intensity[i]),
        }
    return out


def test_registers_every_reader() -> None:
    registry = Registry("datasets")
    readers.facedapt_register_datasets(registry)
    assert registry.names() == sorted(
        ["multipie", "bu3dfe", "kdef", "rafd", "ckplus", "jaffe", "fer2013", "rafdb", "manifest", "image_folder", "photos"])
    for entry in registry:
        assert isinstance(entry.factory("/nowhere"), DatasetSource)


def test_multipie_labels_pose_and_capture(tmp_path: Path) -> None:
    samples = MultiPIE(L.make_multipie(tmp_path), image_size=8).load()
    got = by_name(samples)
    assert samples.images.shape == (8, 3, 8, 8) and samples.images.dtype == torch.uint8
    assert got["001_01_01_110_07.png"] == {**got["001_01_01_110_07.png"], "expression": "neutral", "subject": "001",
                                           "yaw": -90.0}
    assert got["001_01_02_051_07.png"]["expression"] == "happy"  # session 1 recording 2: smile
    assert got["001_01_02_240_07.png"]["yaw"] == 90.0
    assert got["002_03_03_130_07.png"]["expression"] == "disgust"
    assert got["002_03_03_130_07.png"]["yaw"] == -30.0
    # squint and scream are dropped by default; the raised camera 08_1 is not selected
    assert not any(name.startswith(("002_02_03", "002_04_03")) or "_081_" in name for name in got)
    # one capture = subject, session, recording, illumination (all cameras)
    assert len({got[f"001_01_02_{c}_07.png"]["capture"] for c in ("110", "051", "240")}) == 1
    assert got["001_01_02_051_00.png"]["capture"] != got["001_01_02_051_07.png"]["capture"]
    assert samples.pose_bin[samples.paths.index(str(L.multipie_file(
        tmp_path / "Multi-PIE" / "data", "001", 1, 1, "11_0", 7)))] == 0


def test_multipie_options(tmp_path: Path) -> None:
    root = L.make_multipie(tmp_path)
    got = by_name(MultiPIE(root, expression_map={"squint": "disgust", "scream": "surprise"},
                           cameras=["05_1", "14_0", "08_1"], illuminations=[7]).load())
    assert got["002_02_03_051_07.png"]["expression"] == "disgust"
    assert got["002_02_03_140_07.png"]["yaw"] == -15.0
    assert got["002_04_03_051_07.png"]["expression"] == "surprise"
    assert got["001_01_01_081_07.png"]["yaw"] is None  # raised camera: no yaw on the grid
    assert "001_01_02_051_00.png" not in got and "001_01_01_110_07.png" not in got


def test_kdef_labels_subjects_sessions(tmp_path: Path) -> None:
    samples = KDEF(L.make_kdef(tmp_path)).load()
    got = by_name(samples)
    assert got["AF01ANFL.JPG"]["expression"] == "anger" and got["AF01ANFL.JPG"]["yaw"] == -90.0
    assert got["AF01ANS.jpg"]["yaw"] == 0.0  # lower-case extension read too
    assert got["AF01HAHR.JPG"] == {**got["AF01HAHR.JPG"], "expression": "happy", "yaw": 45.0, "subject": "F01"}
    assert got["AF01AFFR.JPG"]["expression"] == "fear" and got["AF01AFFR.JPG"]["yaw"] == 90.0
    assert got["AM02SUHL.JPG"] == {**got["AM02SUHL.JPG"], "expression": "surprise", "yaw": -45.0, "subject": "M02"}
    # sessions A and B: one subject, separate captures
    assert got["BF01ANS.JPG"]["subject"] == "F01"
    assert got["BF01ANS.JPG"]["capture"] != got["AF01ANS.jpg"]["capture"]
    assert got["AF01ANS.jpg"]["capture"] == got["AF01ANFL.JPG"]["capture"]
    # the odd file and the empty subject folder are listed, not fatal
    problems = {Path(p["path"]).name: p["problem"] for p in samples.problems}
    assert set(problems) == {"AM02NES (2).JPG", "AM03"}
    assert "Thumbs.db" not in problems


def test_kdef_options(tmp_path: Path) -> None:
    got = by_name(KDEF(L.make_kdef(tmp_path), angles=["S"], sessions=["A"], expression_map={"AF": None}).load())
    assert set(got) == {"AF01ANS.jpg", "AF01HAS.JPG", "AM02NES.JPG"}


def test_rafd_camera_to_yaw_and_gaze_capture(tmp_path: Path) -> None:
    got = by_name(RaFD(L.make_rafd(tmp_path)).load())
    assert got["Rafd000_01_Caucasian_female_angry_frontal.jpg"]["yaw"] == -90.0
    assert got["Rafd090_01_Caucasian_female_angry_frontal.jpg"] == {
        **got["Rafd090_01_Caucasian_female_angry_frontal.jpg"], "yaw": 0.0, "expression": "anger", "subject": "01"}
    assert got["Rafd180_01_Caucasian_female_angry_frontal.jpg"]["yaw"] == 90.0
    assert got["Rafd135_02_Moroccan_male_happy_right.jpg"]["yaw"] == 45.0
    assert got["Rafd090_02_Moroccan_male_contemptuous_frontal.jpg"]["expression"] == "contempt"
    assert got["Rafd090_02_Moroccan_male_surprised_frontal.jpg"]["expression"] == "surprise"
    frontal = {got[f"Rafd{c}_01_Caucasian_female_angry_frontal.jpg"]["capture"] for c in ("000", "090", "180")}
    assert len(frontal) == 1
    assert got["Rafd045_01_Caucasian_female_angry_left.jpg"]["capture"] not in frontal  # other gaze


def test_rafd_drop_contempt(tmp_path: Path) -> None:
    got = by_name(RaFD(L.make_rafd(tmp_path), expression_map={"contemptuous": None}, gazes=["frontal"]).load())
    assert "Rafd090_02_Moroccan_male_contemptuous_frontal.jpg" not in got
    assert "Rafd045_01_Caucasian_female_angry_left.jpg" not in got


def test_ckplus_emotion_files(tmp_path: Path) -> None:
    samples = CKPlus(L.make_ckplus(tmp_path)).load()
    got = by_name(samples)
    assert set(got) == {"S005_001_00000004.png", "S010_001_00000003.png", "S010_002_00000002.png"}
    assert got["S005_001_00000004.png"] == {**got["S005_001_00000004.png"], "expression": "disgust",
                                            "subject": "S005", "yaw": 0.0}
    assert got["S010_001_00000003.png"]["expression"] == "happy"
    assert got["S010_002_00000002.png"]["expression"] == "contempt"
    assert samples.images.shape[1] == 3  # gray and colour sequences both become RGB


def test_ckplus_frames_and_first_as_neutral(tmp_path: Path) -> None:
    root = L.make_ckplus(tmp_path)
    got = by_name(CKPlus(root, frames=2, first_as_neutral=True, expression_map={"contempt": None}).load())
    assert got["S005_001_00000003.png"]["expression"] == "disgust"
    assert got["S005_001_00000004.png"]["expression"] == "disgust"
    assert got["S005_001_00000001.png"]["expression"] == "neutral"
    assert got["S005_002_00000001.png"]["expression"] == "neutral"  # unlabelled sequence: first frame only
    assert "S005_002_00000002.png" not in got
    assert got["S010_002_00000001.png"]["expression"] == "neutral"  # contempt dropped, its neutral frame kept
    assert "S010_002_00000002.png" not in got


def test_jaffe(tmp_path: Path) -> None:
    samples = JAFFE(L.make_jaffe(tmp_path), channels=1).load()
    got = by_name(samples)
    assert samples.images.shape == (5, 1, 64, 64)
    assert got["KA.AN1.39.tiff"] == {**got["KA.AN1.39.tiff"], "expression": "anger", "subject": "KA"}
    assert got["YM.FE1.64.tiff"]["expression"] == "fear"
    assert got["NA.SU1.79.tiff"]["expression"] == "surprise"
    assert samples.problems == []  # README is not an image: ignored


def test_bu3dfe_textures(tmp_path: Path) -> None:
    got = by_name(BU3DFE(L.make_bu3dfe(tmp_path)).load())
    assert set(got) == {"F0001_AN01WH_F2D.bmp", "F0001_AN04WH_F2D.bmp", "F0001_NE00WH_F2D.bmp",
                        "M0002_HA03BL_F2D.bmp"}
    assert got["F0001_AN01WH_F2D.bmp"] == {**got["F0001_AN01WH_F2D.bmp"], "expression": "anger",
                                           "subject": "F0001", "intensity": 0.25, "yaw": 0.0}
    assert got["F0001_AN04WH_F2D.bmp"]["intensity"] == 1.0
    assert got["F0001_NE00WH_F2D.bmp"]["expression"] == "neutral"
    assert got["M0002_HA03BL_F2D.bmp"]["subject"] == "M0002"


def test_bu3dfe_rendered_views_through_manifest(tmp_path: Path) -> None:
    root = L.make_bu3dfe(tmp_path)
    L.make_bu3dfe_renders(root)
    got = by_name(BU3DFE(root, manifest="renders.csv").load())
    assert got["F0001_HA03_yaw-45.png"] == {**got["F0001_HA03_yaw-45.png"], "expression": "happy",
                                            "subject": "F0001", "yaw": -45.0, "intensity": 0.75}
    assert got["M0002_SU04_yaw+45.png"]["expression"] == "surprise"
    views = {got[f"F0001_HA03_yaw{y}.png"]["capture"] for y in ("-45", "+0", "+45")}
    assert len(views) == 1 and views != {got["M0002_SU04_yaw+0.png"]["capture"]}


@pytest.mark.parametrize("size,channels", [(16, 3), (12, 1)])
def test_output_shape_and_dtype(tmp_path: Path, size: int, channels: int) -> None:
    samples = KDEF(L.make_kdef(tmp_path), image_size=size, channels=channels).load()
    assert samples.images.shape == (len(samples), channels, size, size)
    assert samples.images.dtype == torch.uint8
    assert samples.dataset == "kdef"
