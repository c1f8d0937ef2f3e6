"""A generated corpus of images that are NOT frontal chest radiographs, to measure the content check.

Made in code (numpy + Pillow), from a seed, so it is reproducible and carries no data licence: noise (gray,
colour, salt-and-pepper), blank and constant images, gradients, synthetic photographs, checkerboards and
stripes, text pages, CT-like and MR-like slices, colour-inverted versions of those, and tiny images. Each item
is encoded as PNG or JPEG bytes so it goes through the same reader as an upload. Used by the tests and by
``bench/ood_rates.py``; see docs/decisions/0010-out-of-distribution.md.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

Generator = Callable[[np.random.Generator, int, int], np.ndarray]


@dataclass(frozen=True)
class Sample:
    """One corpus image: its category, a short description and the encoded file bytes."""

    category: str
    name: str
    data: bytes


def _u8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / max(h - 1, 1), x / max(w - 1, 1)


def _blur(image: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    pil = Image.fromarray(_u8(image))
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


# ------------------------------------------------------------------------------------------ categories
def gray_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return rng.random((h, w))
    if kind == 1:
        return rng.normal(0.5, rng.uniform(0.05, 0.3), (h, w))
    return (rng.random((h, w)) < rng.uniform(0.05, 0.5)).astype(np.float32)  # salt and pepper


def colour_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    noise = rng.random((h, w, 3))
    if rng.random() < 0.5:
        noise = np.stack([_blur(noise[..., c], rng.uniform(0.5, 3)) for c in range(3)], axis=-1)
    return noise


def constant(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    level = float(rng.choice([0.0, 1.0, rng.random()]))
    image = np.full((h, w), level, np.float32)
    if rng.random() < 0.5:
        image += rng.normal(0, 0.004, (h, w))  # a blank film: nearly constant, a little sensor noise
    return image


def gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    kind = rng.integers(4)
    if kind == 0:
        return x
    if kind == 1:
        return y
    if kind == 2:
        angle = rng.uniform(0, np.pi)
        g = np.cos(angle) * x + np.sin(angle) * y
        return (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    return np.clip(np.hypot(x - rng.random(), y - rng.random()) * 1.4, 0, 1)


def photograph(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A synthetic outdoor photo: sky gradient, horizon, textured ground, a sun and some objects, in colour."""
    from PIL import Image, ImageDraw

    y, x = _grid(h, w)
    horizon = rng.uniform(0.35, 0.7)
    sky = np.stack([0.35 + 0.3 * y, 0.55 + 0.3 * y, 0.95 - 0.1 * y], -1)
    ground_colour = rng.uniform(0.15, 0.6, 3)
    texture = _blur(rng.random((h, w)), 1.5)[..., None]
    ground = ground_colour * (0.7 + 0.6 * texture)
    image = np.where((y < horizon)[..., None], sky, ground)
    pil = Image.fromarray(_u8(image))
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(3, 9)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.2) * min(h, w)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.rectangle((cx - r, cy - r * 1.5, cx + r, cy + r), fill=colour)
    photo = np.asarray(pil, dtype=np.float32) / 255.0
    photo += rng.normal(0, 0.02, photo.shape)
    if rng.random() < 0.3:  # a black-and-white photo
        photo = photo.mean(axis=-1)
    return photo


def checkerboard(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    period = int(rng.choice([2, 4, 8, 16, 32, 64]))
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.7:
        return (((yy // period) + (xx // period)) % 2).astype(np.float32)
    return ((xx // period) % 2).astype(np.float32) if rng.random() < 0.5 else ((yy // period) % 2).astype(np.float32)


def text_page(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A scanned page / screenshot: lines of text, dark on light or light on dark."""
    from PIL import Image, ImageDraw, ImageFont

    dark_on_light = rng.random() < 0.7
    pil = Image.new("L", (w, h), 245 if dark_on_light else 15)
    draw = ImageDraw.Draw(pil)
    size = int(rng.integers(10, 28))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):
        font = ImageFont.load_default()
    words = ["patient", "report", "chest", "normal", "findings", "lorem", "ipsum", "radiology", "impression", "2026"]
    for row in range(int(rng.integers(3, 40))):
        line = " ".join(str(rng.choice(words)) for _ in range(rng.integers(2, 12)))
        draw.text((int(rng.integers(2, 20)), 4 + row * (size + 6)), line, fill=20 if dark_on_light else 235, font=font)
    return np.asarray(pil, dtype=np.float32) / 255.0


def ct_slice(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An axial chest CT slice in a lung or soft-tissue window: body outline on black air, two dark lungs,
    mediastinum, spine, the table line."""
    y, x = _grid(h, w)
    cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.05, 0.05)
    ax, ay = rng.uniform(0.38, 0.47), rng.uniform(0.28, 0.4)
    body = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1
    image = np.zeros((h, w), np.float32)
    image[body] = rng.uniform(0.45, 0.6)
    fat = body & (((x - cx) / (ax * 0.9)) ** 2 + ((y - cy) / (ay * 0.88)) ** 2 > 1)
    image[fat] = rng.uniform(0.3, 0.4)
    for side in (-1, 1):
        lung = ((x - cx - side * ax * 0.45) / (ax * 0.38)) ** 2 + ((y - cy + 0.02) / (ay * 0.72)) ** 2 <= 1
        image[lung] = rng.uniform(0.02, 0.15)
    spine = ((x - cx) / 0.05) ** 2 + ((y - cy - ay * 0.65) / 0.05) ** 2 <= 1
    image[spine] = 0.95
    heart = ((x - cx - 0.04) / (ax * 0.3)) ** 2 + ((y - cy) / (ay * 0.35)) ** 2 <= 1
    image[heart] = rng.uniform(0.5, 0.65)
    table = np.abs(y - (cy + ay + 0.05)) < 0.008
    image[table] = 0.6
    image = _blur(image, rng.uniform(0.5, 1.5)) + rng.normal(0, 0.03, (h, w))
    return image


def mr_slice(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An axial brain / body MR slice: a bright ring, gray textured tissue, dark ventricles, black background."""
    y, x = _grid(h, w)
    cx, cy = 0.5, 0.5
    ax, ay = rng.uniform(0.3, 0.42), rng.uniform(0.36, 0.46)
    r = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
    image = np.zeros((h, w), np.float32)
    tissue = _blur(rng.random((h, w)), rng.uniform(2, 6))
    image[r <= 1] = 0.35 + 0.5 * tissue[r <= 1]
    image[(r > 0.85) & (r <= 1)] = 0.9
    for side in (-1, 1):
        ventricle = ((x - cx - side * 0.05) / 0.04) ** 2 + ((y - cy) / 0.12) ** 2 <= 1
        image[ventricle] = 0.1
    return _blur(image, 1.0) + rng.normal(0, 0.02, (h, w))


def inverted(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A colour-inverted CT slice, MR slice or photograph."""
    source = [ct_slice, mr_slice, photograph][int(rng.integers(3))]
    return 1.0 - source(rng, h, w)


CATEGORIES: dict[str, Generator] = {
    "gray_noise": gray_noise,
    "colour_noise": colour_noise,
    "constant": constant,
    "gradient": gradient,
    "photograph": photograph,
    "checkerboard": checkerboard,
    "text": text_page,
    "ct_slice": ct_slice,
    "mr_slice": mr_slice,
    "inverted": inverted,
}
#: sizes (height, width) of ordinary images; "tiny" items are 1-48 px on a side
SIZES = ((512, 512), (256, 256), (384, 512), (600, 400), (1024, 1024), (300, 300))


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """(H, W) or (H, W, 3) float in [0, 1] -> PNG / JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_u8(image)).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def corpus(per_category: int = 30, seed: int = 17) -> Iterator[Sample]:
    """``per_category`` images of each category (plus as many tiny ones), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    for category, make in CATEGORIES.items():
        for i in range(per_category):
            h, w = SIZES[i % len(SIZES)]
            fmt = "JPEG" if i % 3 == 2 else "PNG"
            yield Sample(category, f"{category}-{i}-{w}x{h}.{fmt.lower()}", encode(make(rng, h, w), fmt))
    for i in range(per_category):
        side = int(rng.choice([1, 2, 4, 8, 16, 24, 32, 48]))
        make = list(CATEGORIES.values())[i % len(CATEGORIES)]
        yield Sample("tiny", f"tiny-{i}-{side}px.png", encode(make(rng, side, side)))
