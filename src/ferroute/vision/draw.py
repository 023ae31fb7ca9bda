"""Pictures of decisions: each face's box, decision (one colour each) and emotion drawn on the photo.

The last step of image -> face -> crop -> ensemble -> decomposition -> decision -> report:
it reads the JSON-able face reports and the image, nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .images import ImageInput, load_image

#: One colour per decision (RGB): green accept, amber ambiguous, red reject, grey no_face.
COLORS: dict[str, tuple[int, int, int]] = {
    "accept": (34, 160, 70),
    "ambiguous": (235, 150, 0),
    "reject": (215, 40, 40),
    "no_face": (130, 130, 130),
}


def face_label(face: dict[str, Any]) -> str:
    """Short text for a face: ``happiness 93%``, ``ambiguous: fear 31% / sadness 25%``, ``reject``."""
    decision = face.get("decision", "")
    dist = face.get("distribution") or {}
    top = sorted(dist.items(), key=lambda kv: -kv[1])[:2]
    if decision == "accept" and top:
        return f"{top[0][0]} {top[0][1]:.0%}"
    if decision == "ambiguous" and len(top) == 2:
        return f"ambiguous: {top[0][0]} {top[0][1]:.0%} / {top[1][0]} {top[1][1]:.0%}"
    return decision


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def annotate(image: ImageInput | Image.Image | np.ndarray, faces: list[dict[str, Any]]) -> Image.Image:
    """The image (path, bytes, PIL image or array) with every face of ``faces`` (the reports of
    :meth:`FERRouter.route`, boxes in original pixels) drawn on it; an RGB PIL image."""
    im = Image.fromarray(load_image(image, name="annotate"))
    w, h = im.size
    if max(w, h) < 256:  # tiny images (48x48 crops): enlarge so the text can be read
        k = 256 / max(w, h)
        im = im.resize((round(w * k), round(h * k)), Image.NEAREST)
    else:
        k = 1.0
    draw = ImageDraw.Draw(im)
    side = min(im.size)
    line = max(2, round(side / 150))
    font = _font(max(11, round(side / 28)))
    boxed = [f for f in faces if f.get("box")]
    for f in faces:
        if not f.get("box"):
            text = face_label(f) if f.get("decision") != "no_face" else "no face found"
            _text(draw, (line, line), text, COLORS.get(f.get("decision", ""), COLORS["no_face"]), font)
    for f in boxed:
        x, y, bw, bh = (v * k for v in f["box"])
        color = COLORS.get(f.get("decision", ""), COLORS["no_face"])
        draw.rectangle([x, y, x + bw, y + bh], outline=color, width=line)
        for px, py in f.get("landmarks") or []:
            r = line
            draw.ellipse([px * k - r, py * k - r, px * k + r, py * k + r], fill=color)
        _text(draw, (x, y), face_label(f), color, font, above=True)
    return im


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int], font: Any, above: bool = False) -> None:
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (b - t) // 5)
    x, y = xy
    if above:
        y = y - (b - t) - 2 * pad if y - (b - t) - 2 * pad >= 0 else y
    x = max(0.0, min(x, draw.im.size[0] - (r - l) - 2 * pad))
    draw.rectangle([x, y, x + (r - l) + 2 * pad, y + (b - t) + 2 * pad], fill=color)
    draw.text((x + pad - l, y + pad - t), text, fill=(255, 255, 255), font=font)
