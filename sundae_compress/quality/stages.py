"""The pipeline, as the callables :mod:`.targets` searches with, for one loaded scene.

:class:`SceneStages` renders the original scene on the novel views once (the teacher renders are
the expensive part of every probe) and caches pruned scenes by count, so a probe costs one prune,
one codec round trip and 12 renders of the small candidate. :meth:`SceneStages.build` runs the
real stages (prune, fine-tune, encode), writes the bundle to a temporary file and scores what
reads back from it: the PSNR a build reports is the PSNR of the bundle as written. With
``layout=2`` the stages are those of one level of a level-of-detail ladder (``--lod-psnr``): the
codec round trip, the bytes and the build use the ladder's level encoding
(:func:`~sundae_compress.io.ladder.encode_level`), and a build's payload carries the encoded level."""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from ..errors import SundaeError
from ..gaussians import GaussianSet
from .targets import HEADER_SLACK, Built

#: pruned scenes kept in memory between probes (by count)
PRUNE_CACHE = 12


def bundle_bytes(gs: GaussianSet, settings, *, net=None, net_meta=None, info=None) -> bytes:
    """The exact bytes :func:`~sundae_compress.io.bundle.write_bundle` would write."""
    from ..io.bundle import build_bundle

    head, blobs, _ = build_bundle(gs, settings=settings, net=net, net_meta=net_meta, info=info)
    return head + b"".join(blobs)


def score(refs: List, cams: List, original: GaussianSet, cand: GaussianSet, post=None) -> Dict[str, Any]:
    """``cand`` (+ ``post``) against cached renders ``refs`` of ``original`` on ``cams``: the dict
    :func:`~sundae_compress.evaluate.evaluate_view_sets` gives for one view set."""
    from ..evaluate import _compare, render_views

    imgs = render_views(cand, cams, postprocess=post)
    r = _compare(original, cand, cams, refs, imgs)
    for key in ("lpips", "lpips_note", "n_gaussians_original", "n_gaussians_candidate"):
        r.pop(key, None)
    r["worst"] = dict(min(r["views"], key=lambda v: v["psnr"])) if r["views"] else None
    return r


class SceneStages:
    """Probe / size / build for one scene (see :mod:`.targets`).

    ``prune(gs, count)`` prunes (selection + merge, as the pipeline does); ``finetune(pruned,
    count, settings)`` returns ``(gaussians, net bytes or None, net meta or None, summary dict)``
    or is None for ``--no-finetune``; ``settings(quality)`` gives a preset's codec settings;
    ``info(count, quality, finetune_summary)`` the bundle's header info; ``read(path)`` reads a
    bundle back as ``(Gaussians, postprocess)`` (``api.load_for_render``); ``novel`` / ``near`` are
    the evaluation cameras. ``layout=2``: ladder levels (see the module docstring; ``info`` and
    ``read`` are then unused). Probes are memoised per (count, quality)."""

    def __init__(self, gs: GaussianSet, *, prune: Callable, finetune: Optional[Callable], settings: Callable,
                 info: Callable, read: Callable, novel: List, near: Optional[List] = None, notify=None,
                 layout: Optional[int] = None):
        if layout not in (None, 2):
            raise ValueError(f"layout must be None (single-level bundle) or 2 (ladder level), got {layout!r}")
        self.gs, self.n = gs, len(gs)
        self.layout = layout
        self._probes: Dict[tuple, float] = {}
        self._read = read
        self._prune, self._finetune, self.settings, self.info = prune, finetune, settings, info
        self.novel, self.near = list(novel), list(near or [])
        self.say = notify or (lambda _m: None)
        self._pruned: "OrderedDict[int, GaussianSet]" = OrderedDict()
        self._refs: Dict[str, List] = {}

    # -- cached pieces ---------------------------------------------------------------------------
    def refs(self, name: str = "novel") -> List:
        """Renders of the original scene on the ``novel`` / ``near`` views (made once)."""
        if name not in self._refs:
            from ..evaluate import render_views

            self._refs[name] = render_views(self.gs, getattr(self, name))
        return self._refs[name]

    def pruned(self, count: int) -> GaussianSet:
        count = int(count)
        if count >= self.n:
            return self.gs
        if count not in self._pruned:
            self._pruned[count] = self._prune(self.gs, count)
            while len(self._pruned) > PRUNE_CACHE:
                self._pruned.popitem(last=False)
        else:
            self._pruned.move_to_end(count)
        return self._pruned[count]

    def roundtrip(self, gs: GaussianSet, quality: str) -> GaussianSet:
        return self._roundtrip_with(gs, self.settings(quality))

    # -- the callables of targets.py -------------------------------------------------------------
    def probe(self, count: int, quality: str) -> float:
        """Novel-view PSNR of the scene pruned to ``count``, through the codec, no fine-tuning."""
        key = (int(count), quality)
        if key not in self._probes:
            cand = self.roundtrip(self.pruned(count), quality)
            self._probes[key] = score(self.refs("novel"), self.novel, self.gs, cand)["psnr"]
        return self._probes[key]

    def size(self, count: int, quality: str) -> int:
        kept = self.pruned(count)
        if self.layout == 2:
            from ..io.ladder import encode_level

            return encode_level(kept, self.settings(quality)).stored_bytes
        return len(bundle_bytes(kept, self.settings(quality), info=self.info(len(kept), quality, None)))

    def build(self, count: int, quality: str, limit: Optional[int] = None) -> Built:
        """The real pipeline at ``count`` / ``quality``; with ``limit``, Gaussians are dropped
        (pruned again from the fine-tuned set) until the bundle fits ``limit`` bytes."""
        settings = self.settings(quality)
        count = int(count)
        net = net_meta = summary = None
        finetuned = self._finetune is not None and count < self.n
        if finetuned:
            kept, net, net_meta, summary = self._finetune(self.pruned(count), count, settings)
        else:
            kept = self.pruned(count)
        return self._package(kept, quality, settings, net, net_meta, summary, finetuned, limit)

    def trim(self, built: Built, level: float) -> Optional[Built]:
        """Fewer Gaussians of a fine-tuned build whose PSNR overshoots: the smallest count, pruned
        from its fine-tuned Gaussians (no new fine-tuning; each try costs a prune, a codec round trip
        and the novel renders), that still reaches ``level`` dB. None when there is nothing to gain
        (not fine-tuned, a compensation net whose features the prune would mix, or no smaller count
        reaches ``level``)."""
        from .targets import Recorder, count_for_level

        p = built.payload
        if not built.finetuned or p.get("net") is not None or built.count <= 1:
            return None
        kept, settings = p["gaussians"], p["settings"]
        pruned: Dict[int, GaussianSet] = {}

        def smaller(c):
            if c not in pruned:
                pruned[c] = kept if c >= len(kept) else self._prune(kept, c)
            return pruned[c]

        def probe(c, _q):
            if c >= len(kept):
                return built.psnr
            cand = self._roundtrip_with(smaller(c), settings)
            return score(self.refs("novel"), self.novel, self.gs, cand)["psnr"]

        rec = Recorder(probe, lambda c, _q: 0)  # silent: its probes are not the prune-only curve
        c = count_for_level(rec, level, len(kept), built.quality, guess=max(1, len(kept) // 2))
        if c is None or c >= len(kept):
            return None
        self.say(f"trim: {c:,} of the {len(kept):,} fine-tuned Gaussians keep {rec.psnr[(c, built.quality)]:.2f} dB")
        summary = dict(p["finetune"] or {}, trimmed_from=len(kept))
        return self._package(smaller(c), built.quality, settings, None, None, summary, True)

    def _roundtrip_with(self, gs: GaussianSet, settings) -> GaussianSet:
        from ..codec import decode_gaussians, encode_gaussians

        sections, meta = encode_gaussians(gs, settings, **({"version": 2} if self.layout == 2 else {}))
        return decode_gaussians(sections, meta)

    def _package(self, kept: GaussianSet, quality: str, settings, net, net_meta, summary, finetuned: bool,
                 limit: Optional[int] = None) -> Built:
        """Encode ``kept`` as it will be written (fitting ``limit`` bytes), read it back and score it."""
        if self.layout == 2:
            return self._build_level(kept, quality, settings, summary, finetuned)
        data = bundle_bytes(kept, settings, net=net, net_meta=net_meta, info=self.info(len(kept), quality, summary))
        while limit is not None and len(data) > limit - HEADER_SLACK:
            smaller = int(len(kept) * (limit - HEADER_SLACK) / len(data) * 0.995)
            smaller = min(smaller, len(kept) - 1)
            if smaller < 1:
                raise SundaeError(f"--target-size {limit:,} bytes is too small for this scene's bundle "
                                  f"({len(data):,} bytes with one Gaussian)")
            self.say(f"fit: {len(data):,} bytes > {limit:,}; keeping {smaller:,} of {len(kept):,} Gaussians")
            kept = self._prune(kept, smaller) if finetuned else self.pruned(smaller)
            data = bundle_bytes(kept, settings, net=net, net_meta=net_meta,
                                info=self.info(len(kept), quality, summary))
        cand, post = self._read_back(data)
        novel = score(self.refs("novel"), self.novel, self.gs, cand, post)
        payload = {"gaussians": kept, "net": net, "net_meta": net_meta, "finetune": summary,
                   "settings": settings, "decoded": cand, "post": post, "novel": novel}
        return Built(len(kept), quality, novel["psnr"], len(data), finetuned, payload)

    def _build_level(self, kept: GaussianSet, quality: str, settings, summary, finetuned: bool) -> Built:
        """A ladder level: encoded as the ladder stores it, decoded as a reader does, scored."""
        from ..io.ladder import decoded_levels, encode_level

        level = encode_level(kept, settings)
        cand = decoded_levels([level])[0]
        novel = score(self.refs("novel"), self.novel, self.gs, cand)
        payload = {"gaussians": kept, "level": level, "net": None, "net_meta": None, "finetune": summary,
                   "settings": settings, "decoded": cand, "post": None, "novel": novel}
        return Built(len(kept), quality, novel["psnr"], level.stored_bytes, finetuned, payload)

    def fidelity(self, built: Built) -> Dict[str, Any]:
        """Near and novel view scores of a build (the shape of ``evaluate_view_sets``' result)."""
        from ..evaluate import VIEW_SET_NOTES

        p = built.payload
        out: Dict[str, Any] = {"lpips": None, "lpips_note": "unavailable: no LPIPS weights available offline",
                               "n_gaussians_original": self.n, "n_gaussians_candidate": built.count}
        if self.near:
            out["near"] = dict(score(self.refs("near"), self.near, self.gs, p["decoded"], p["post"]),
                               note=VIEW_SET_NOTES["near"])
        out["novel"] = dict(p["novel"], note=VIEW_SET_NOTES["novel"])
        out["psnr"], out["ssim"], out["worst"] = out["novel"]["psnr"], out["novel"]["ssim"], out["novel"]["worst"]
        return out

    def _read_back(self, data: bytes):
        """Decode bundle bytes the way a reader does (from a file), with its net's postprocess."""
        fd, tmp = tempfile.mkstemp(suffix=".sundae", prefix="sundae-target-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self._read(tmp)
        finally:
            os.unlink(tmp)
