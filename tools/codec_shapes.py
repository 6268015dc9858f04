"""Generic scenes for the VAE decoder: random outlines filled flat or with a random two-colour
pattern (a split at any angle, stripes of any width and angle, a checkerboard of any cell size) on a
world background, in world palette colours.

Why: the world's scenes hold flat shapes only, so a decoder trained on them alone snaps every object
to one colour and one of eight outlines: its round trip identified 0% of striped circles and
checkered squares and about half of the two-colour diamonds (`eval lifelong`'s VAE ceiling). A user
who teaches a patterned thing is limited by the decoder before any lesson starts. These scenes make
the decoder a codec for shapes and two-colour fills in general; they are random families (no fixed
outline or pattern of src/world/concepts.rs), and only the decoder sees them: the encoder, the latent
space, the UNet and the text encoder never do.
"""
import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS = [(180, 180, 180), (191, 227, 247), (235, 217, 180), (35, 40, 80)]
COLORS = [(224, 60, 49), (242, 140, 40), (245, 211, 39), (61, 163, 93), (47, 111, 222),
          (142, 68, 173), (240, 110, 170), (139, 90, 43), (245, 245, 245), (30, 30, 30)]
MIN_CONTRAST = 60.0  # src/world/vocab.rs: no object colour closer than this to its background
SIZE, SUPER = 64, 4


def _far(a, b, d=MIN_CONTRAST):
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float32))) >= d


def _outline(rng, cx, cy, r):
    """A star-shaped polygon around (cx, cy): 3-12 vertices at jittered even angles (no slivers),
    radii in [0.4r, r] (concave outlines) or all r (convex)."""
    n = int(rng.integers(3, 13))
    ang = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
    rad = r * rng.uniform(0.4, 1.0, n) if rng.random() < 0.6 else np.full(n, r)
    return [(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)]


def _pattern(rng, box):
    """Per-supersampled-pixel colour index (0 or 1) over `box` (x0, y0, x1, y1) in supersampled px."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    t = rng.uniform(0, np.pi)
    u = (xs - cx) * np.cos(t) + (ys - cy) * np.sin(t)
    v = -(xs - cx) * np.sin(t) + (ys - cy) * np.cos(t)
    kind = rng.choice(["halves", "stripes", "checker"])
    if kind == "halves":
        return (u < rng.uniform(-0.2, 0.2) * (x1 - x0)).astype(np.uint8)
    width = rng.uniform(2.5, 8.0) * SUPER
    if kind == "stripes":
        return (np.floor(u / width + rng.random()) % 2).astype(np.uint8)
    return ((np.floor(u / width) + np.floor(v / width)) % 2).astype(np.uint8)


def _object(rng, canvas, bg):
    """Draws one object on the supersampled `canvas` (H x W x 3 uint8)."""
    ok = [c for c in COLORS if _far(c, bg)]
    first = ok[int(rng.integers(len(ok)))]
    span = rng.uniform(10, 34) * SUPER
    cx, cy = rng.uniform(span / 2, SIZE * SUPER - span / 2, 2)
    mask_img = Image.new("L", canvas.shape[1::-1], 0)
    ImageDraw.Draw(mask_img).polygon(_outline(rng, cx, cy, span / 2), fill=255)
    mask = np.asarray(mask_img) > 127
    if rng.random() < 0.3:
        canvas[mask] = first
        return
    second = [c for c in ok if _far(c, first)]
    second = second[int(rng.integers(len(second)))]
    box = (int(cx - span / 2), int(cy - span / 2), int(cx + span / 2) + 1, int(cy + span / 2) + 1)
    box = (max(box[0], 0), max(box[1], 0), min(box[2], SIZE * SUPER), min(box[3], SIZE * SUPER))
    idx = _pattern(rng, box)
    region = canvas[box[1]:box[3], box[0]:box[2]]
    m = mask[box[1]:box[3], box[0]:box[2]]
    region[m & (idx == 0)] = first
    region[m & (idx == 1)] = second


def scene(rng):
    """One 64 x 64 x 3 uint8 scene: a background and one or two generic objects."""
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    canvas = np.empty((SIZE * SUPER, SIZE * SUPER, 3), np.uint8)
    canvas[:] = bg
    for _ in range(1 if rng.random() < 0.7 else 2):
        _object(rng, canvas, bg)
    # Box-filter downsampling: the world's anti-aliasing is coverage-weighted too.
    return canvas.reshape(SIZE, SUPER, SIZE, SUPER, 3).mean(axis=(1, 3)).round().astype(np.uint8)


def batch(rng, n):
    return np.stack([scene(rng) for _ in range(n)])


if __name__ == "__main__":  # a contact sheet to look at: python tools/codec_shapes.py OUT.png
    import sys
    rng = np.random.default_rng(0)
    grid = batch(rng, 32).reshape(4, 8, SIZE, SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(4 * SIZE, 8 * SIZE, 3)
    Image.fromarray(grid).resize((8 * SIZE * 3, 4 * SIZE * 3), Image.NEAREST).save(sys.argv[1])
