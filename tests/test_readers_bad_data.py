"""Bad data is normal: every case names the file, fails fast by default, and under
``on_bad_image="skip"`` is skipped and listed in ``Samples.problems``. Plus fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from facedapt_plugins.datasets.readers import (
    BU3DFE,
    FER2013,
    JAFFE,
    KDEF,
    RAFDB,
    READERS,
    CKPlus,
    ImageFolder,
    Manifest,
    MultiPIE,
    RaFD,
)
from PIL import Image

from facedapt.errors import DataError, UsageError

try:
    import fixtures_layouts as L
except ImportError:  # tests/ collected as a package
    from tests import fixtures_layouts as L

MAKERS = {
    "multipie": L.make_multipie, "kdef": L.make_kdef, "rafd": L.make_rafd, "ckplus": L.make_ckplus,
    "jaffe": L.make_jaffe, "bu3dfe": L.make_bu3dfe, "fer2013": L.make_fer2013, "rafdb": L.make_rafdb,
    "manifest": L.make_manifest, "image_folder": L.make_image_folder,
}


def raises_one_line(*parts: str, fn) -> str:
    """Call ``fn``; it must raise a one-line DataError holding every literal part."""
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message
    return message


# --------------------------------------------------------------------------- roots


@pytest.mark.parametrize("cls", READERS, ids=lambda c: c.name)
def test_missing_root(tmp_path: Path, cls) -> None:
    missing = tmp_path / "not-there"
    raises_one_line(f"root not found: {missing}", fn=cls(missing).load)
    raises_one_line(f"root not found: {missing}", fn=cls(missing).fingerprint)


@pytest.mark.parametrize("cls", READERS, ids=lambda c: c.name)
def test_root_without_images(tmp_path: Path, cls) -> None:
    root = tmp_path / "empty"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "notes.txt").write_text("nothing here\n")
    raises_one_line(str(root), fn=cls(root).load)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_fixture_loads_and_mixed_sizes_are_no_problem(tmp_path: Path, name: str) -> None:
    cls = next(c for c in READERS if c.name == name)
    samples = cls(MAKERS[name](tmp_path), image_size=8).load()
    assert samples.images.shape[1:] == (3, 8, 8)
    assert all("size" not in p["problem"] and "channel" not in p["problem"] for p in samples.problems)


# --------------------------------------------------------------------------- unreadable images


@pytest.mark.parametrize("damage", [L.truncate, L.garble], ids=["truncated", "garbled"])
def test_bad_image_fails_naming_the_file(tmp_path: Path, damage) -> None:
    root = L.make_kdef(tmp_path)
    bad = damage(root / "AF01" / "AF01HAHR.JPG")
    raises_one_line(f"{bad}: unreadable image", fn=KDEF(root).load)


@pytest.mark.parametrize("damage", [L.truncate, L.garble], ids=["truncated", "garbled"])
def test_bad_image_skipped_and_listed(tmp_path: Path, damage) -> None:
    root = L.make_jaffe(tmp_path)
    bad = damage(root / "KA.HA2.30.tiff")
    samples = JAFFE(root, on_bad_image="skip").load()
    assert len(samples) == 4 and str(bad) not in samples.paths
    assert samples.problems == [{"path": str(bad), "problem": samples.problems[0]["problem"]}]
    assert samples.problems[0]["problem"].startswith("unreadable image")


def test_all_images_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    root = L.make_rafd(tmp_path)
    for path in root.iterdir():
        L.garble(path)
    raises_one_line("none of the 7 images could be read", fn=RaFD(root, on_bad_image="skip").load)


# --------------------------------------------------------------------------- labels


def test_ckplus_code_out_of_range(tmp_path: Path) -> None:
    root = L.make_ckplus(tmp_path)
    bad = L.ck_emotion(root, "S010", "001", 3, "   9.0000000e+00\n")
    message = raises_one_line(str(bad), fn=CKPlus(root).load)
    assert "9.0000000e+00" in message and "out of range" in message
    samples = CKPlus(root, on_bad_image="skip").load()
    assert [p["path"] for p in samples.problems] == [str(bad)]
    assert not any("S010_001" in p for p in samples.paths)


def test_ckplus_emotion_not_a_number(tmp_path: Path) -> None:
    root = L.make_ckplus(tmp_path)
    bad = L.ck_emotion(root, "S005", "001", 4, "disgust\n")
    raises_one_line(f"{bad}: emotion file does not hold a number", fn=CKPlus(root).load)


def test_ckplus_without_emotion_folder(tmp_path: Path) -> None:
    root = L.make_ckplus(tmp_path)
    for path in sorted((root / "Emotion").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "Emotion").rmdir()
    raises_one_line("Emotion: CK+ emotion label folder not found", fn=CKPlus(root).load)


def test_fer2013_emotion_out_of_range_and_bad_pixels(tmp_path: Path) -> None:
    root = L.make_fer2013(tmp_path, rows=((7, "Training"), (3, "Training")))
    raises_one_line("fer2013.csv:2: emotion '7' is out of range (0..6)", fn=FER2013(root).load)
    root = L.make_fer2013(tmp_path / "b", extra=("4,1 2 3,Training",))
    raises_one_line("fer2013.csv:7: 3 pixel values, expected 2304", fn=FER2013(root).load)
    samples = FER2013(root, on_bad_image="skip").load()
    assert len(samples) == 5 and samples.problems[0]["path"].endswith("fer2013.csv:7")


def test_fer2013_missing_column(tmp_path: Path) -> None:
    root = tmp_path / "fer"
    root.mkdir()
    (root / "fer2013.csv").write_text("label,pixels\n0,1 2\n")
    raises_one_line("missing column(s) emotion", fn=FER2013(root).load)


def test_rafdb_label_out_of_range_and_missing_image(tmp_path: Path) -> None:
    root = L.make_rafdb(tmp_path)
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "train_00003.jpg 8\n")
    raises_one_line("list_patition_label.txt:5: train_00003.jpg: label 8 is out of range", fn=RAFDB(root).load)
    labels.write_text(labels.read_text().replace("train_00003.jpg 8", "train_00003.jpg 2"))
    missing = root / "Image" / "aligned" / "train_00003_aligned.jpg"
    raises_one_line(f"{missing}: file not found", fn=RAFDB(root).load)
    samples = RAFDB(root, on_bad_image="skip").load()
    assert len(samples) == 4 and samples.problems == [{"path": str(missing), "problem": "file not found"}]


def test_multipie_unknown_recording(tmp_path: Path) -> None:
    root = L.make_multipie(tmp_path)
    bad = L.image(L.multipie_file(root, "003", 1, 3, "05_1", 7))
    raises_one_line(f"{bad}: session 01 has no recording 03", fn=MultiPIE(root).load)


def test_bu3dfe_bad_intensity(tmp_path: Path) -> None:
    root = L.make_bu3dfe(tmp_path)
    bad = L.image(root / "F0001" / "F0001_HA07WH_F2D.bmp")
    raises_one_line(f"{bad}: intensity 07 is out of range", fn=BU3DFE(root).load)


def test_manifest_unknown_expression_names_the_row(tmp_path: Path) -> None:
    root = L.make_manifest(tmp_path)
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text() + "img/a.png,smile,p1,0,,train,\n")
    raises_one_line(f"{manifest}:5: unknown expression 'smile'", fn=Manifest(root).load)
    samples = Manifest(root, on_bad_image="skip").load()
    assert len(samples) == 3 and samples.problems[0]["path"] == f"{manifest}:5"
    assert len(Manifest(root, expression_map={"smile": "happy"}, on_bad_image="skip").load()) == 3  # now a duplicate


def test_manifest_missing_file(tmp_path: Path) -> None:
    root = L.make_manifest(tmp_path)
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text() + "img/gone.png,sad,p3,0,,train,\n")
    raises_one_line(f"{root / 'img' / 'gone.png'}: file not found", fn=Manifest(root).load)
    assert len(Manifest(root, on_bad_image="skip").load()) == 3


def test_manifest_bad_landmarks_and_yaw(tmp_path: Path) -> None:
    root = L.make_manifest(tmp_path)
    manifest = root / "manifest.csv"
    text = manifest.read_text()
    manifest.write_text(text + 'img/c.png,sad,p3,0,,train,"[[1, 2, 3]]"\n')
    raises_one_line(f"{manifest}:5: landmarks must be a JSON list", fn=Manifest(root).load)
    manifest.write_text(text + "img/c.png,sad,p3,left,,train,\n")
    raises_one_line(f"{manifest}:5: yaw 'left' is not a number", fn=Manifest(root).load)


def test_manifest_without_path_column(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "manifest.csv").write_text("file,expression\na.png,happy\n")
    raises_one_line("the 'path' column is required", fn=Manifest(root).load)


# --------------------------------------------------------------------------- duplicates


def test_duplicate_names_case_variants(tmp_path: Path) -> None:
    root = L.make_kdef(tmp_path)
    dup = L.image(root / "AF01" / "AF01ANS.JPG")  # next to AF01ANS.jpg
    raises_one_line("AF01ANS.jpg: duplicate of ", "AF01ANS.JPG", fn=KDEF(root).load)
    samples = KDEF(root, on_bad_image="skip").load()
    assert str(dup) in samples.paths and len(samples) == 8
    assert any(p["problem"].startswith("duplicate of") for p in samples.problems)


def test_duplicate_manifest_rows(tmp_path: Path) -> None:
    root = L.make_manifest(tmp_path)
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text() + "img/a.png,sad,p1,0,,train,\n")
    raises_one_line("a.png: duplicate of", fn=Manifest(root).load)


def test_skip_collects_every_problem(tmp_path: Path) -> None:
    root = L.make_kdef(tmp_path)
    L.truncate(root / "AF01" / "AF01HAHR.JPG")
    L.garble(root / "AM02" / "AM02NES.JPG")
    L.image(root / "AF01" / "AF01ANS.JPG")
    samples = KDEF(root, on_bad_image="skip").load()
    problems = {Path(p["path"]).name for p in samples.problems}
    assert problems == {"AF01HAHR.JPG", "AM02NES.JPG", "AF01ANS.jpg", "AM02NES (2).JPG", "AM03"}
    assert len(samples) == 6


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs", [
    {"on_bad_image": "ignore"}, {"channels": 2}, {"image_size": 0},
    {"expression_map": {"XX": "happy"}}, {"expression_map": {"AN": "rage"}}, {"angles": ["UP"]},
])
def test_bad_options(kwargs) -> None:
    with pytest.raises(UsageError):
        KDEF("/nowhere", **kwargs)


# --------------------------------------------------------------------------- fingerprints


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_fingerprint_does_not_decode(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = next(c for c in READERS if c.name == name)
    source = cls(MAKERS[name](tmp_path))

    def forbidden(*_a, **_k):
        raise AssertionError("fingerprint() decoded an image")

    monkeypatch.setattr(Image, "open", forbidden)
    first = source.fingerprint()
    assert first == cls(source.root).fingerprint() and len(first) == 64


def test_fingerprint_changes_with_files_and_options(tmp_path: Path) -> None:
    root = L.make_kdef(tmp_path)
    base = KDEF(root).fingerprint()
    assert KDEF(root, image_size=32).fingerprint() != base
    assert KDEF(root, angles=["S"]).fingerprint() != base
    path = root / "AF01" / "AF01HAS.JPG"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    touched = KDEF(root).fingerprint()
    assert touched != base
    L.image(path, size=(9, 9))  # rewritten, other size
    assert KDEF(root).fingerprint() not in (base, touched)
    L.image(root / "AM02" / "AM02HAS.JPG")  # a file added
    assert KDEF(root).fingerprint() != touched


def test_fingerprint_follows_listed_files(tmp_path: Path) -> None:
    fer = L.make_fer2013(tmp_path)
    before = FER2013(fer).fingerprint()
    (fer / "fer2013.csv").write_text((fer / "fer2013.csv").read_text() + f"1,{L.fer_pixels(9)},Training\n")
    assert FER2013(fer).fingerprint() != before
    root = L.make_manifest(tmp_path)
    before = Manifest(root).fingerprint()
    L.image(root / "img" / "a.png", size=(12, 12))
    assert Manifest(root).fingerprint() != before
    rafdb = L.make_rafdb(tmp_path)
    before = RAFDB(rafdb).fingerprint()
    L.image(rafdb / "Image" / "original" / "train_00001.jpg", size=(20, 20))
    assert RAFDB(rafdb).fingerprint() == before  # not the selected image set
    L.image(rafdb / "Image" / "aligned" / "train_00001_aligned.jpg", size=(20, 20))
    assert RAFDB(rafdb).fingerprint() != before


def test_image_folder_pattern_mismatch(tmp_path: Path) -> None:
    root = L.make_image_folder(tmp_path)
    bad = L.image(root / "happy" / "IMG_0001.png")
    raises_one_line(f"{bad}: file name does not match pattern",
                    fn=ImageFolder(root, pattern=r"(?P<subject>s\d+)_").load)
