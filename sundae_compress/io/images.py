"""Image files, in one place, through Pillow: reading photos, writing PNGs, labelling columns.

* :func:`read_image` -- any photo Pillow opens (PNG, JPEG, ...) as uint8 (H, W, 3).
* :func:`save_png` -- an (H, W, 3) float [0, 1] or uint8 image as an 8-bit RGB PNG, written
  atomically with the user's permissions (:mod:`.atomic`).
* :func:`load_images` -- the photo of every camera of a camera file, checked against its size.
* :func:`label_columns` -- a caption strip above an image made of equal columns.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

from ..errors import SundaeError
from .atomic import write_bytes_atomic

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def to_uint8(img) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) float in [0, 1] (numpy or torch) or uint8 -> contiguous uint8 (H, W, 3)."""
    if hasattr(img, "detach"):  # a torch tensor, without importing torch here
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def read_image(path: Union[str, Path]) -> np.ndarray:
    """A photo (any format Pillow reads) as uint8 (H, W, 3); alpha is dropped, grey is repeated."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except FileNotFoundError:
        raise SundaeError(f"{path}: no such image") from None
    except UnidentifiedImageError:
        raise SundaeError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt data
        raise SundaeError(f"{path}: cannot read image ({e})") from None


def save_png(path: Union[str, Path], img) -> Path:
    """Write an (H, W, 3) float [0, 1] or uint8 image as an 8-bit RGB PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img), "RGB").save(buf, format="PNG", compress_level=6)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SundaeError(f"{path}: cannot write image ({e.strerror or e})") from None
    return write_bytes_atomic(path, buf.getvalue())


def load_images(folder: Union[str, Path], cameras: Sequence) -> List[np.ndarray]:
    """The photo of each camera, as float32 (H, W, 3) in [0, 1]: ``folder/<name>`` or
    ``folder/<name stem>.{png,jpg,jpeg}``. Each photo must match its camera's size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SundaeError(f"{folder}: images folder not found")
    out = []
    for cam in cameras:
        name = cam.name or ""
        stem = Path(name).stem
        cands = ([folder / name] if name else []) + [folder / (stem + e) for e in _IMAGE_EXTS]
        path = next((c for c in cands if name and c.is_file()), None)
        if path is None:
            raise SundaeError(f"{folder}: no photo for camera {name!r} (looked for {stem}.png/.jpg)")
        img = read_image(path)
        if img.shape[0] != cam.height or img.shape[1] != cam.width:
            raise SundaeError(f"{path}: photo is {img.shape[1]}x{img.shape[0]} but its camera is "
                              f"{cam.width}x{cam.height}")
        out.append(img.astype(np.float32) / 255.0)
    return out


def label_columns(img, labels: Sequence[str], height: int = 14) -> np.ndarray:
    """``img`` (H, W, 3) with a white strip of ``height`` pixels on top holding one caption centred
    over each of ``len(labels)`` equal columns; float32 in [0, 1]."""
    from PIL import Image, ImageDraw

    a = to_uint8(img)
    h, w, _ = a.shape
    strip = Image.new("RGB", (w, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    col = w / max(len(labels), 1)
    for i, text in enumerate(labels):
        left, top, right, bottom = draw.textbbox((0, 0), text)
        x = int(i * col + (col - (right - left)) / 2)
        draw.text((max(x, int(i * col)), max((height - (bottom - top)) // 2 - top, 0)), text, fill=(0, 0, 0))
    out = np.concatenate([np.asarray(strip), a], axis=0)
    return out.astype(np.float32) / 255.0
