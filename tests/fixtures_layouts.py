"""Tiny copies of the real datasets in their official layouts, with the real quirks.

Each ``make_*`` writes a handful of 8x8 images (mixed formats, sizes and channel counts, as
the releases have) under ``tmp`` and returns the root to pass to the reader. Nothing is
downloaded: the pixels are random, only names and label files follow the official releases.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """A random image saved in the format its extension names (seeded by the path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tiff": "TIFF", ".tif": "TIFF"}
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path, format=fmt[path.suffix.lower()])
    return path


def truncate(path: Path) -> Path:
    """Cut an image file short, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garble(path: Path) -> Path:
    """Replace a file's content with bytes no decoder recognizes."""
    path.write_bytes(b"this is not an image\n" * 4)
    return path


# --------------------------------------------------------------------------- Multi-PIE


def multipie_file(root: Path, subject: str, session: int, recording: int, camera: str, illum: int) -> Path:
    return (root / f"session{session:02d}" / "multiview" / subject / f"{recording:02d}" / camera
            / f"{subject}_{session:02d}_{recording:02d}_{camera.replace('_', '')}_{illum:02d}.png")


MULTIPIE_FILES = (
    # subject, session, recording, camera, illumination
    ("001", 1, 1, "11_0", 7), ("001", 1, 1, "05_1", 7), ("001", 1, 1, "24_0", 7),
    ("001", 1, 1, "08_1", 7),  # raised camera: not in the default selection
    ("001", 1, 2, "11_0", 7), ("001", 1, 2, "05_1", 7), ("001", 1, 2, "24_0", 7),
    ("001", 1, 2, "05_1", 0),  # same recording, another flash: another capture
    ("002", 2, 3, "05_1", 7), ("002", 2, 3, "14_0", 7),  # squint
    ("002", 3, 3, "13_0", 7),  # disgust
    ("002", 4, 3, "05_1", 7),  # scream
)


def make_multipie(tmp: Path) -> Path:
    root = tmp / "Multi-PIE" / "data"
    for spec in MULTIPIE_FILES:
        image(multipie_file(root, *spec), size=(10, 8))  # landscape like the 640x480 originals
    return root


# --------------------------------------------------------------------------- KDEF


def make_kdef(tmp: Path) -> Path:
    root = tmp / "KDEF"
    image(root / "AF01" / "AF01ANFL.JPG")
    image(root / "AF01" / "AF01ANS.jpg")  # lower-case extension, as some official files have
    image(root / "AF01" / "AF01HAS.JPG", mode="L")
    image(root / "AF01" / "AF01HAHR.JPG")
    image(root / "AF01" / "AF01AFFR.JPG")
    image(root / "BF01" / "BF01ANS.JPG")  # same person, second session
    image(root / "AM02" / "AM02SUHL.JPG", size=(8, 11))  # portrait like the 562x762 originals
    image(root / "AM02" / "AM02NES.JPG")
    image(root / "AM02" / "AM02NES (2).JPG")  # the occasional odd file
    (root / "AM02" / "Thumbs.db").write_bytes(b"\0" * 16)
    (root / "AM03").mkdir()  # a subject folder with no images
    return root


# --------------------------------------------------------------------------- RaFD


RAFD_FILES = (
    "Rafd090_01_Caucasian_female_angry_frontal.jpg",
    "Rafd000_01_Caucasian_female_angry_frontal.jpg",
    "Rafd180_01_Caucasian_female_angry_frontal.jpg",
    "Rafd045_01_Caucasian_female_angry_left.jpg",
    "Rafd090_02_Moroccan_male_contemptuous_frontal.jpg",
    "Rafd135_02_Moroccan_male_happy_right.jpg",
    "Rafd090_02_Moroccan_male_surprised_frontal.jpg",
)


def make_rafd(tmp: Path) -> Path:
    root = tmp / "RafDDownload-90_45_135"
    for name in RAFD_FILES:
        image(root / name, size=(8, 12))
    return root


# --------------------------------------------------------------------------- CK+


def ck_frame(root: Path, subject: str, seq: str, frame: int) -> Path:
    return root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{frame:08d}.png"


def ck_emotion(root: Path, subject: str, seq: str, frame: int, text: str) -> Path:
    path = root / "Emotion" / subject / seq / f"{subject}_{seq}_{frame:08d}_emotion.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_ckplus(tmp: Path) -> Path:
    root = tmp / "CK+"
    for f in range(1, 5):
        image(ck_frame(root, "S005", "001", f), size=(10, 8), mode="L")
    ck_emotion(root, "S005", "001", 4, "   3.0000000e+00\n")  # the official float format: disgust
    for f in range(1, 4):
        image(ck_frame(root, "S005", "002", f), mode="L")  # no emotion file (most sequences)
    for f in range(1, 4):
        image(ck_frame(root, "S010", "001", f), mode="RGB")  # a few CK+ sequences are colour
    ck_emotion(root, "S010", "001", 3, "   5.0000000e+00\n")  # happy
    for f in range(1, 3):
        image(ck_frame(root, "S010", "002", f), mode="L")
    ck_emotion(root, "S010", "002", 2, "   2.0000000e+00\n")  # contempt
    (root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store").write_bytes(b"\0")
    return root


# --------------------------------------------------------------------------- JAFFE


def make_jaffe(tmp: Path) -> Path:
    root = tmp / "jaffe"
    for name in ("KA.AN1.39.tiff", "KA.HA2.30.tiff", "NA.SU1.79.tiff", "YM.NE3.51.tiff", "YM.FE1.64.tiff"):
        image(root / name, mode="L")
    (root / "README").write_text("The Japanese Female Facial Expression (JAFFE) Database\n")
    return root


# --------------------------------------------------------------------------- BU-3DFE


def make_bu3dfe(tmp: Path) -> Path:
    root = tmp / "BU_3DFE"
    image(root / "F0001" / "F0001_AN01WH_F2D.bmp")
    image(root / "F0001" / "F0001_AN04WH_F2D.bmp")
    image(root / "F0001" / "F0001_NE00WH_F2D.bmp")
    image(root / "M0002" / "M0002_HA03BL_F2D.bmp", size=(9, 8))
    image(root / "F0001" / "F0001_AN01WH_F3D.bmp")  # the 3D texture: not a 2D photograph
    (root / "F0001" / "F0001_AN01WH_F3D.wrl").write_text("#VRML V2.0 utf8\n")
    return root


def make_bu3dfe_renders(root: Path) -> Path:
    """Renders of two scans at three yaws, listed in renders.csv (subject/expression from names)."""
    lines = ["path,subject,expression,yaw,pitch"]
    for code in ("F0001_HA03", "M0002_SU04"):
        for yaw in (-45, 0, 45):
            rel = f"renders/{code}_yaw{yaw:+d}.png"
            image(root / rel)
            lines.append(f"{rel},,,{yaw},0")
    (root / "renders.csv").write_text("\n".join(lines) + "\n")
    return root / "renders.csv"


# --------------------------------------------------------------------------- FER2013

FER_ROWS = ((0, "Training"), (3, "Training"), (6, "PublicTest"), (3, "PrivateTest"), (2, "Training"))


def fer_pixels(seed: int, count: int = 48 * 48) -> str:
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, count))


def make_fer2013(tmp: Path, rows: tuple = FER_ROWS, extra: tuple[str, ...] = ()) -> Path:
    root = tmp / "fer2013"
    root.mkdir(parents=True, exist_ok=True)
    lines = ["emotion,pixels,Usage"]
    lines += [f"{emotion},{fer_pixels(i)},{usage}" for i, (emotion, usage) in enumerate(rows)]
    lines += list(extra)
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    return root


# --------------------------------------------------------------------------- RAF-DB

RAFDB_LIST = (("train_00001.jpg", 5), ("train_00002.jpg", 1), ("test_0001.jpg", 4), ("test_0002.jpg", 7))


def make_rafdb(tmp: Path) -> Path:
    root = tmp / "basic"
    lines = []
    for name, label in RAFDB_LIST:
        stem = name[:-4]
        image(root / "Image" / "aligned" / f"{stem}_aligned.jpg")
        image(root / "Image" / "original" / name, size=(12, 9))
        lines.append(f"{name} {label}")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


# --------------------------------------------------------------------------- generic layouts


def make_manifest(tmp: Path, fmt: str = "csv") -> Path:
    root = tmp / "mine"
    image(root / "img" / "a.png")
    image(root / "img" / "b.jpg", size=(16, 8))
    image(root / "img" / "c.png", mode="L")
    rows = [
        {"path": "img/a.png", "expression": "happy", "subject": "p1", "yaw": "30", "pitch": "", "split": "train",
         "landmarks": "[[1, 2], [3, 4]]"},
        {"path": "img/b.jpg", "expression": "3", "subject": "p2", "yaw": "-15", "pitch": "5", "split": "test",
         "landmarks": "[[4, 0], [12, 8]]"},
        {"path": "img/c.png", "expression": "", "subject": "", "yaw": "", "pitch": "", "split": "train",
         "landmarks": ""},
    ]
    if fmt == "csv":
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(_csv_cell(r[k]) for k in header) for r in rows]
        (root / "manifest.csv").write_text("\n".join(lines) + "\n")
        return root
    import json

    with (root / "manifest.jsonl").open("w") as f:
        for r in rows:
            obj = dict(r)
            obj["landmarks"] = json.loads(r["landmarks"]) if r["landmarks"] else None
            obj["yaw"] = float(r["yaw"]) if r["yaw"] else None
            f.write(json.dumps(obj) + "\n")
    return root


def _csv_cell(value: str) -> str:
    return f'"{value}"' if "," in value else value


def make_image_folder(tmp: Path) -> Path:
    root = tmp / "folders"
    image(root / "happy" / "s01_yaw+30.png")
    image(root / "angry" / "s02_yaw-15.jpg", mode="L")
    image(root / "Neutral" / "s01_yaw0.bmp")
    image(root / "surprised" / "s03_yaw90.png", size=(8, 10))
    (root / "sad").mkdir()  # an expression folder with no images
    return root
