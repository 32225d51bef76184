"""Render a labelled contact sheet of the synthetic faces to docs/images/synthetic_contact_sheet.png.

Rows: a few subjects x the 7 basic expressions (strongest intensity sample); columns: yaw
-90..90. Usage: python benchmarks/contact_sheet.py [--out PATH] [--subjects N] [--size PX]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from facedapt_plugins.datasets.synthetic import SyntheticFaces
from PIL import Image, ImageDraw

from facedapt.data.samples import EXPRESSIONS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/synthetic_contact_sheet.png")
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="rendered image size")
    parser.add_argument("--zoom", type=int, default=1, help="pixel repeat factor in the sheet")
    parser.add_argument("--landmarks", action="store_true", help="draw the 68 landmarks (visible ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", type=float, default=None, help="style_strength override")
    args = parser.parse_args()

    ds = SyntheticFaces("default", seed=args.seed, image_size=args.size, num_subjects=max(args.subjects, 2),
                        style_strength=args.style)
    lay = ds.layout()
    n_views = len(lay.view_yaw)
    rows: list[tuple[str, torch.Tensor]] = []
    for s in range(args.subjects):
        for e in range(7):
            caps = torch.nonzero((lay.cap_subject == s) & (lay.cap_expression == e)).flatten()
            cap = caps[lay.cap_intensity[caps].argmax()]
            rows.append((f"{ds.subject_ids[s]} {EXPRESSIONS[e]} {float(lay.cap_intensity[cap]):.2f}",
                         torch.nonzero(lay.img_capture == cap).flatten()))
    out = ds.render(torch.cat([r[1] for r in rows]))
    cell = args.size * args.zoom
    label_w, head_h = 150, 18
    sheet = Image.new("RGB", (label_w + n_views * cell, head_h + len(rows) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for j, yaw in enumerate(lay.view_yaw.tolist()):
        draw.text((label_w + j * cell + 4, 3), f"{yaw:+.0f}", fill="black")
    for i, (label, _) in enumerate(rows):
        draw.text((4, head_h + i * cell + cell // 2 - 6), label, fill="black")
        for j in range(n_views):
            k = i * n_views + j
            tile = Image.fromarray(out.images[k].permute(1, 2, 0).numpy())
            if args.landmarks:
                d = ImageDraw.Draw(tile)
                for (x, y), vis in zip(out.landmarks[k].tolist(), out.visible[k].tolist()):
                    if vis:
                        d.point((x, y), fill=(0, 255, 0))
            tile = tile.resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_w + j * cell, head_h + i * cell))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet = sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT)  # keeps the PNG small
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
