"""Small image files for the data tests, made on the fly (no downloads): JPEG/PNG/WebP in the
usual modes, 16-bit PNGs, corrupt and truncated files, image-folder trees and webdataset shards."""
from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image


def smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 [h, w, 3] image: colour gradients plus mild noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    img = np.stack([base[c] * 0.5 + 60 * np.sin(x / (7 + 5 * c) + seed) + 60 * np.cos(y / (9 + 3 * c))
                    for c in range(3)], -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray | Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(h: int = 48, w: int = 64, seed: int = 0, quality: int = 90) -> bytes:
    return encode(smooth_rgb(h, w, seed), "JPEG", quality=quality)


def png16_rgb(arr16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): raw PNG chunks around zlib data."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def odd_images(seed: int = 0) -> dict[str, bytes]:
    """One file per awkward case, keyed by file name."""
    rgb = smooth_rgb(40, 50, seed)
    grey16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], -1)
    rgba[:, :25, 3] = 0                      # left half transparent
    full = jpeg(120, 160, seed)               # big enough that half of it still has whole headers
    return {
        "grey.jpg": encode(Image.fromarray(rgb).convert("L"), "JPEG", quality=90),
        "cmyk.jpg": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=90),
        "rgba.png": encode(rgba, "PNG"),
        "palette.png": encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "photo.webp": encode(rgb, "WEBP", quality=90),
        "grey16.png": encode(Image.fromarray(grey16), "PNG"),
        "rgb16.png": png16_rgb(rgb.astype(np.uint16) * 257),
        "truncated.jpg": full[: len(full) * 6 // 10],
        "garbage.jpg": b"this is not an image at all",
        "empty.png": b"",
    }


def write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def class_tree(root: str, classes: dict[str, int], *, size=(40, 56), seed: int = 0) -> dict[str, list[str]]:
    """``root/<class>/<i>.jpg`` with ``classes[c]`` JPEGs each; returns {class: [paths]}."""
    out = {}
    for ci, (c, n) in enumerate(sorted(classes.items())):
        out[c] = [write(os.path.join(root, c, f"{i:03d}.jpg"), jpeg(*size, seed=seed + 100 * ci + i))
                  for i in range(n)]
    return out


def webdataset_tar(path: str, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    """A webdataset shard: each sample is (key, {ext: bytes}) -> members KEY.ext, in order."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
