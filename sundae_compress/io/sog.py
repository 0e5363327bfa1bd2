"""PlayCanvas SOG (version 2): ``meta.json`` + lossless WebP images, zipped into one ``.sog`` file.

Written from the public format specification. Every per-Gaussian image has the same size
(W x H pixels, W = ceil(√N / 4) * 4, H = ceil(N / W / 4) * 4); pixel ``i`` (row-major from the top
left) belongs to Gaussian ``i``:

* ``means_l.webp`` / ``means_u.webp``: low / high byte of a 16-bit fraction (RGB = x, y, z) of
  ``sign(v) * ln(1 + |v|)`` between ``meta.means.mins`` and ``maxs``.
* ``quats.webp``: the three smaller components of the unit (w, x, y, z) quaternion, made positive
  in its largest one, as ``255 * (v * √2 * 0.5 + 0.5)`` in RGB; A = 252 + index of the largest.
* ``scales.webp``: RGB = indices into ``meta.scales.codebook`` (256 log-scales).
* ``sh0.webp``: RGB = indices into ``meta.sh0.codebook`` (256 DC values), A = 255 * sigmoid(opacity).
* ``shN_labels.webp`` (R + 256 G = palette entry) and ``shN_centroids.webp`` (64 entries per row,
  one pixel per SH coefficient, RGB = indices into ``meta.shN.codebook``), present for SH degree > 0.

Codebooks are 1D k-means over the values; the SH palette is k-means over each Gaussian's SH-rest
vector (:func:`sundae_compress.codec.vq.kmeans`). Images go through Pillow (lossless WebP with
``exact`` so that RGB under a zero alpha survives). Gaussians are stored in Morton order.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import SundaeError
from ..gaussians import SH_COEFFS, GaussianSet, normalize_quats
from .atomic import write_bytes_atomic
from .compressed_ply import spatial_order

GENERATOR = "sundae-compress"
#: WebP lossless effort (Pillow ``quality`` in lossless mode, and ``method``). Effort 100 took
#: 14 s for one 356² image here and 75 took 0.15 s for the same bytes.
WEBP_EFFORT, WEBP_METHOD = 75, 4
#: Largest SH palette written by default: k-means with 2048 entries on 125 k Gaussians took 18 s on
#: this (busy) 2-core machine, 4096 took 78 s (mean squared SH error 0.0098 vs 0.0079).
MAX_PALETTE = 2048


# -- quantisers ----------------------------------------------------------------------------------

def codebook_1d(values: np.ndarray, k: int = 256, iters: int = 12, sample: int = 1 << 20, seed: int = 0):
    """1D k-means: ``(codebook float32 (k,), labels uint8-able (values.shape))``; sorted codebook,
    initialised at quantiles, Lloyd iterations on (a sample of) the values."""
    v = np.asarray(values, np.float64).ravel()
    train = v if len(v) <= sample else np.random.default_rng(seed).choice(v, sample, replace=False)
    train = np.sort(train)
    c = np.unique(np.quantile(train, (np.arange(k) + 0.5) / k))
    for _ in range(iters):
        idx = np.searchsorted((c[1:] + c[:-1]) / 2, train)
        cnt = np.bincount(idx, minlength=len(c))
        sums = np.bincount(idx, weights=train, minlength=len(c))
        c = np.where(cnt > 0, sums / np.maximum(cnt, 1), c)
        c = np.unique(c)
    c = np.concatenate([c, np.repeat(c[-1:], k - len(c))]) if len(c) < k else c
    labels = np.searchsorted((c[1:] + c[:-1]) / 2, v).reshape(np.shape(values))
    return c.astype(np.float32), labels


def palette_size(n: int) -> int:
    """SH palette entries for ``n`` Gaussians: about one per 64, a power of two in [256, MAX_PALETTE]."""
    return int(min(MAX_PALETTE, max(256, 2 ** round(np.log2(max(n, 1) / 64)))))


def _log_transform(v):
    return np.sign(v) * np.log1p(np.abs(v))


def _inv_log_transform(v):
    return np.sign(v) * np.expm1(np.abs(v))


def _image_size(n: int):
    w = int(np.ceil(np.sqrt(n) / 4) * 4)
    h = int(np.ceil(n / w / 4) * 4)
    return w, h


def _webp(rgba: np.ndarray, w: int, h: int) -> bytes:
    """(n, 4) uint8 rows → lossless WebP of w x h (unused pixels zero)."""
    from PIL import Image

    img = np.zeros((w * h, 4), np.uint8)
    img[: len(rgba)] = rgba
    buf = io.BytesIO()
    Image.fromarray(img.reshape(h, w, 4), "RGBA").save(buf, format="WEBP", lossless=True,
                                                        quality=WEBP_EFFORT, method=WEBP_METHOD, exact=True)
    return buf.getvalue()


# -- writing -------------------------------------------------------------------------------------

def encode_sog(gs: GaussianSet, *, sh_palette: Optional[int] = None, seed: int = 0) -> Dict[str, bytes]:
    """The files of a SOG scene: ``{"meta.json": ..., "means_l.webp": ..., ...}``."""
    from PIL import features

    if not features.check("webp"):
        raise SundaeError("cannot write .sog: this Pillow has no WebP support")
    n = len(gs)
    if n == 0:
        raise SundaeError("cannot write .sog: the scene has no Gaussians")
    g = gs.subset(spatial_order(gs.means.astype(np.float64)))
    w, h = _image_size(n)
    files: Dict[str, bytes] = {}
    full = np.full(n, 255, np.uint8)

    lt = _log_transform(g.means.astype(np.float64))
    mins, maxs = lt.min(0), lt.max(0)
    span = np.where(maxs > mins, maxs - mins, 1.0)
    q16 = np.clip(np.round((lt - mins) / span * 65535), 0, 65535).astype(np.uint16)
    files["means_l.webp"] = _webp(np.column_stack([(q16 & 0xFF).astype(np.uint8), full]), w, h)
    files["means_u.webp"] = _webp(np.column_stack([(q16 >> 8).astype(np.uint8), full]), w, h)

    q = normalize_quats(g.quats).astype(np.float64)
    largest = np.argmax(np.abs(q), 1)
    q = np.where(q[np.arange(n), largest][:, None] < 0, -q, q)
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    small = np.take_along_axis(q, others, 1)
    qb = np.clip(np.round(255 * (small * np.sqrt(2) * 0.5 + 0.5)), 0, 255).astype(np.uint8)
    files["quats.webp"] = _webp(np.column_stack([qb, (252 + largest).astype(np.uint8)]), w, h)

    scb, sl = codebook_1d(g.scales, seed=seed)
    files["scales.webp"] = _webp(np.column_stack([sl.astype(np.uint8), full]), w, h)

    ccb, cl = codebook_1d(g.sh[:, 0], seed=seed)
    alpha = np.clip(np.round(255.0 / (1.0 + np.exp(-g.opacities.astype(np.float64)))), 0, 255).astype(np.uint8)
    files["sh0.webp"] = _webp(np.column_stack([cl.astype(np.uint8), alpha]), w, h)

    meta = {"version": 2, "asset": {"generator": GENERATOR}, "count": n,
            "means": {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": ["means_l.webp", "means_u.webp"]},
            "scales": {"codebook": scb.tolist(), "files": ["scales.webp"]},
            "quats": {"files": ["quats.webp"]},
            "sh0": {"codebook": ccb.tolist(), "files": ["sh0.webp"]}}
    k = g.sh.shape[1]
    if k > 1:
        from ..codec.vq import kmeans

        coeffs = k - 1
        rest = g.sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * coeffs)  # channel-major like f_rest_*
        pal = min(sh_palette or palette_size(n), 65536, n)
        cents, labels = kmeans(rest, pal, iters=6, seed=seed, sample=8 * pal)
        pal = len(cents)
        ncb, nl = codebook_1d(cents, seed=seed)
        nl = nl.reshape(pal, 3, coeffs).transpose(0, 2, 1).astype(np.uint8)  # (entry, coeff, rgb)
        cw, ch = 64 * coeffs, (pal + 63) // 64
        cimg = np.zeros((ch * 64, coeffs, 4), np.uint8)
        cimg[:pal, :, :3] = nl
        cimg[:pal, :, 3] = 255
        files["shN_centroids.webp"] = _webp(cimg.reshape(-1, 4), cw, ch)
        lab = labels.astype(np.uint32)
        files["shN_labels.webp"] = _webp(np.column_stack([(lab & 0xFF), (lab >> 8), np.zeros(n), full])
                                         .astype(np.uint8), w, h)
        meta["shN"] = {"count": pal, "bands": g.sh_degree, "codebook": ncb.tolist(),
                       "files": ["shN_centroids.webp", "shN_labels.webp"]}
    files = {"meta.json": json.dumps(meta).encode(), **files}
    return files


def sog_bundle_bytes(files: Dict[str, bytes]) -> bytes:
    """A ``.sog`` bundle: the files zipped at the archive root (stored: WebP is already compressed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data)
    return buf.getvalue()


def write_sog(gs: GaussianSet, path, *, sh_palette: Optional[int] = None, seed: int = 0) -> int:
    """Write ``gs`` as a bundled ``.sog`` atomically; returns the bytes written."""
    data = sog_bundle_bytes(encode_sog(gs, sh_palette=sh_palette, seed=seed))
    write_bytes_atomic(path, data)
    return len(data)


# -- reading -------------------------------------------------------------------------------------

def _decode_webp(path, name: str, data: bytes, need: int) -> np.ndarray:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        a = np.asarray(img.convert("RGBA"))
    except Exception as e:  # Pillow raises many types on corrupt images
        raise SundaeError(f"{path}: cannot decode {name}: {type(e).__name__}: {e}") from None
    if a.shape[0] * a.shape[1] < need:
        raise SundaeError(f"{path}: {name} holds {a.shape[0] * a.shape[1]} pixels, {need} needed")
    return a


def _read_files(path) -> Dict[str, bytes]:
    p = Path(path)
    if not p.exists():
        raise SundaeError(f"{path}: no such file")
    try:
        if p.is_dir() or p.name == "meta.json":
            folder = p if p.is_dir() else p.parent
            return _LazyFolder(folder)
        with zipfile.ZipFile(p) as z:
            return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}
    except zipfile.BadZipFile as e:
        raise SundaeError(f"{path}: not a .sog bundle (zip: {e})") from None
    except OSError as e:
        raise SundaeError(f"{path}: cannot read: {e.strerror or e}") from None


class _LazyFolder(dict):
    """An unbundled SOG: the files beside meta.json, read on demand."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def __contains__(self, name):
        return (self.folder / name).is_file()

    def __getitem__(self, name):
        return (self.folder / name).read_bytes()


def read_sog(path) -> GaussianSet:
    """Read a SOG scene (a ``.sog`` bundle, or a ``meta.json`` with its images) into a GaussianSet."""
    files = _read_files(path)

    def get(name):
        if name not in files:
            raise SundaeError(f"{path}: SOG scene lacks {name}")
        return files[name]

    try:
        meta = json.loads(get("meta.json"))
        if meta.get("version") != 2:
            raise SundaeError(f"{path}: SOG meta version {meta.get('version')!r} is not supported (2 is)")
        n = int(meta["count"])
        if n <= 0:
            raise SundaeError(f"{path}: SOG scene holds no Gaussians")
        img = {}
        for key, names in (("means", meta["means"]["files"]), ("quats", meta["quats"]["files"]),
                           ("scales", meta["scales"]["files"]), ("sh0", meta["sh0"]["files"])):
            img[key] = [_decode_webp(path, nm, get(nm), n).reshape(-1, 4)[:n] for nm in names]
        mins, maxs = np.asarray(meta["means"]["mins"], np.float64), np.asarray(meta["means"]["maxs"], np.float64)
        scb = np.asarray(meta["scales"]["codebook"], np.float64)
        ccb = np.asarray(meta["sh0"]["codebook"], np.float64)
        shn = meta.get("shN")
    except (KeyError, TypeError, ValueError) as e:
        raise SundaeError(f"{path}: corrupt SOG meta.json ({type(e).__name__}: {e})") from None
    if len(scb) != 256 or len(ccb) != 256 or mins.shape != (3,) or maxs.shape != (3,):
        raise SundaeError(f"{path}: corrupt SOG meta.json (codebooks must hold 256 values, bounds 3)")

    lo, hi = img["means"]
    q16 = lo[:, :3].astype(np.float64) + 256.0 * hi[:, :3]
    span = np.where(maxs - mins != 0, maxs - mins, 1.0)
    means = _inv_log_transform(mins + span * (q16 / 65535.0))

    qi = img["quats"][0].astype(np.float64)
    tag = img["quats"][0][:, 3].astype(np.int64)
    valid = (tag >= 252) & (tag <= 255)
    largest = np.where(valid, tag - 252, 0)
    small = (qi[:, :3] / 255.0 * 2 - 1) / np.sqrt(2)
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    quats = np.zeros((n, 4))
    np.put_along_axis(quats, others, small, 1)
    quats[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1 - (quats * quats).sum(1)))
    quats[~valid] = [1, 0, 0, 0]

    scales = scb[img["scales"][0][:, :3]]
    sh0 = img["sh0"][0]
    alpha = np.clip(sh0[:, 3] / 255.0, 1e-4, 1 - 1e-4)
    degree = 0
    if shn:
        degree = int(shn.get("bands", 0))
        if degree not in (1, 2, 3):
            raise SundaeError(f"{path}: SOG shN bands {degree!r} is not 1, 2 or 3")
    k = SH_COEFFS[degree]
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = ccb[sh0[:, :3]]
    if degree:
        coeffs = k - 1
        try:
            pal = int(shn["count"])
            ncb = np.asarray(shn["codebook"], np.float64)
            cimg = _decode_webp(path, shn["files"][0], get(shn["files"][0]), 0)
            labels_img = _decode_webp(path, shn["files"][1], get(shn["files"][1]), n).reshape(-1, 4)[:n]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise SundaeError(f"{path}: corrupt SOG shN entry ({type(e).__name__}: {e})") from None
        if cimg.shape[1] != 64 * coeffs or cimg.shape[0] * 64 < pal or len(ncb) != 256:
            raise SundaeError(f"{path}: SOG shN_centroids is {cimg.shape[1]}x{cimg.shape[0]}, "
                              f"expected width {64 * coeffs} for {pal} entries")
        ent = cimg[:, :, :3].reshape(-1, 64, coeffs, 3).reshape(-1, coeffs, 3)[:pal]  # (entry, coeff, rgb)
        lab = labels_img[:, 0].astype(np.int64) + 256 * labels_img[:, 1].astype(np.int64)
        ok = lab < pal
        sh[ok, 1:] = ncb[ent[lab[ok]]]
    return GaussianSet(means=means, quats=normalize_quats(quats.astype(np.float32)), scales=scales,
                       opacities=np.log(alpha / (1 - alpha)), sh=sh,
                       meta={"source": str(path), "format": "sog", "source_count": n,
                             "source_bytes": Path(path).stat().st_size if Path(path).is_file() else None})
