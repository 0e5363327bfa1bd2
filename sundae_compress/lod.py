"""Level-of-detail ladders: ``sundae-compress X.ply --lod 0.01,0.05,0.2`` → one bundle, several levels.

Decisions (measured, ``benchmarks/results/lod.md``):

* **Independent levels.** Every level is pruned (and fine-tuned) from the original scene on its own,
  exactly as ``--ratio r`` would, so each level renders like an independent bundle of that budget.
  Nesting (a finer level = the coarser level's Gaussians + added ones) was measured and rejected:
  with the coarse, merged Gaussians shared, guitar at 20 % lost 1.6 dB on novel views against an
  independent 20 % bundle (37.99 vs 39.62 dB, no fine-tuning), far outside the 0.5 dB the ladder
  must hold. The format still reads nested levels (``base``), see :mod:`sundae_compress.io.ladder`.
* **Coarser quantisation below the finest level.** Storing independent levels costs about
  sum(ratios) / max(ratio) of the finest level alone (1.30x for 0.01,0.05,0.2, more because sparse
  levels cost more bits per Gaussian). The levels below the finest use the next lower codec preset
  (:data:`COARSE_PRESET`): at those budgets the pruning error dwarfs the codec's, so the preset
  costs hundredths of a dB there while saving ~20 % of their bytes.
* **Measured fidelity.** Every level is decoded from its encoded sections and scored on novel views
  against the original (:func:`sundae_compress.evaluate.evaluate_view_sets`); the figures are
  stored in the level's header entry and listed by ``sundae-inspect``.

The pipeline itself is :func:`sundae_compress.api.compress` with ``lod`` (``api._compress_ladder``);
this module holds the ladder's decisions and formatting. Printing belongs to ``cli.py`` / ``batch.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .errors import SundaeError

#: A ladder holds 2 to this many levels.
MAX_LEVELS = 8
#: The codec preset of every level below the finest, by the preset of the finest level.
COARSE_PRESET = {"max": "high", "high": "medium", "medium": "low", "low": "low"}


def parse_lod(lod) -> List[float]:
    """``"0.01,0.05,0.2"`` (or a sequence of numbers) → the level ratios, coarse to fine.

    Each ratio is in (0, 1]; at least 2 and at most :data:`MAX_LEVELS`, all different (given in any
    order; levels are always stored coarse first)."""
    if isinstance(lod, str):
        parts = [p.strip() for p in lod.split(",")]
        if any(not p for p in parts):
            raise SundaeError(f"--lod takes ratios separated by commas, e.g. 0.01,0.05,0.2; got {lod!r}")
    else:
        parts = list(lod)
    ratios = []
    for p in parts:
        try:
            r = float(p)
        except (TypeError, ValueError):
            raise SundaeError(f"--lod: {p!r} is not a number (ratios in (0, 1], e.g. 0.01,0.05,0.2)") from None
        if not 0.0 < r <= 1.0:  # also NaN
            raise SundaeError(f"--lod: every ratio must be in (0, 1], got {r:g}")
        ratios.append(r)
    if not 2 <= len(ratios) <= MAX_LEVELS:
        raise SundaeError(f"--lod needs 2 to {MAX_LEVELS} ratios, got {len(ratios)} (one level: use --ratio)")
    if len(set(ratios)) != len(ratios):
        raise SundaeError(f"--lod: a ratio appears twice ({','.join(f'{r:g}' for r in ratios)})")
    return sorted(ratios)


def parse_lod_psnr(text) -> List[float]:
    """``"28,32,36"`` (or a sequence of numbers) → the levels' novel-view PSNR targets in dB, coarse
    (lowest) to fine: 2 to :data:`MAX_LEVELS`, all different, each as ``--target-psnr`` accepts."""
    from .quality.targets import check_target_psnr

    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if isinstance(text, str) and any(not p for p in parts):
        raise SundaeError(f"--lod-psnr takes PSNR targets in dB separated by commas, e.g. 28,32,36; got {text!r}")
    targets = []
    for p in parts:
        try:
            targets.append(check_target_psnr(p))
        except SundaeError:
            raise SundaeError(f"--lod-psnr: {p!r} is not a PSNR target in dB (0 to 100, e.g. 28,32,36)") from None
    if not 2 <= len(targets) <= MAX_LEVELS:
        raise SundaeError(f"--lod-psnr needs 2 to {MAX_LEVELS} targets, got {len(targets)} "
                          f"(one level: use --target-psnr)")
    if len(set(targets)) != len(targets):
        raise SundaeError(f"--lod-psnr: a target appears twice ({','.join(f'{t:g}' for t in targets)})")
    return sorted(targets)


def check_increasing(counts: Sequence[int], labels: Sequence[str], n: int, flag: str = "--lod") -> None:
    """Levels must hold more Gaussians from coarse to fine (``labels`` name what set each count)."""
    for a, b, la, lb in zip(counts, counts[1:], labels, labels[1:]):
        if a >= b:
            raise SundaeError(f"{flag}: {la} and {lb} both keep {a:,} of the {n:,} Gaussians"
                              + (f" ({b:,} for {lb})" if b != a else "")
                              + "; choose levels further apart")


def level_counts(ratios: Sequence[float], n: int) -> List[int]:
    """The Gaussian count of each level in a scene of ``n`` valid ones (``--ratio``'s rounding);
    two levels that round to the same count are an error."""
    from .prune.select import Budget

    counts = [Budget.parse(r).of(n) for r in ratios]
    check_increasing(counts, [f"ratios {ratios[0]:g}"] + [f"{r:g}" for r in ratios[1:]], n)
    return counts


def level_settings(quality: Optional[str], settings, k: int, n_levels: int):
    """Codec settings of level ``k`` of ``n_levels``: explicit ``settings`` for every level, else the
    ``quality`` preset for the finest level and :data:`COARSE_PRESET` of it below."""
    from .codec.settings import DEFAULT_QUALITY, quality_settings

    if settings is not None:
        return layout2_settings(settings), None
    name = str(quality or DEFAULT_QUALITY).strip().lower()
    if k < n_levels - 1:
        name = COARSE_PRESET.get(name, name)
    try:
        return layout2_settings(quality_settings(name), LAYOUT2_COLOR_BITS.get(name)), name
    except ValueError as e:
        raise SundaeError(str(e)) from None


#: Ladder levels are stored in codec layout 2 (format version 3), which has no colour steps: the DC
#: colour of a preset is the 6-bit-class codebook the presets used before format version 4.
LAYOUT2_COLOR_BITS = {"max": 7, "high": 6, "medium": 6, "low": 5}


def layout2_settings(s, color_bits: Optional[int] = None):
    """``s`` as codec layout 2 can store it: ``color_mode "step"`` (layout 4 only) becomes the colour
    codebook (``color_bits``, default ``s.color_bits``); other settings are kept."""
    import dataclasses

    if s.color_mode != "step":
        return s
    return dataclasses.replace(s, color_mode="codebook",
                               color_bits=s.color_bits if color_bits is None else color_bits)


def check_options(*, fmt: str, finetune_options: Optional[Dict[str, Any]], ratio=None, count=None,
                  lod=None, lod_psnr=None, target_psnr=None, target_size=None, best_effort=False) -> None:
    """What a ladder cannot be combined with (one-line errors, before any work). ``lod`` /
    ``lod_psnr``: the ladder options given (at least one; both is an error)."""
    if lod is not None and lod_psnr is not None:
        raise SundaeError("give --lod (ratios) or --lod-psnr (PSNR targets), not both")
    which = "--lod" if lod_psnr is None else "--lod-psnr"
    if target_psnr is not None or target_size is not None:
        raise SundaeError(f"{which} sets every level; it cannot be combined with --target-psnr / --target-size")
    if ratio is not None or count is not None:
        raise SundaeError(f"{which} sets the size of every level; drop --ratio / --count")
    if best_effort and lod_psnr is None:
        raise SundaeError("--best-effort applies to --target-psnr and --lod-psnr")
    if fmt != "sundae":
        raise SundaeError(f"--lod writes one .sundae bundle holding every level; the {fmt} format holds one "
                          f"scene (write one file per --ratio instead)")
    opts = finetune_options or {}
    if opts.get("net") or opts.get("features"):
        raise SundaeError(f"{which} levels carry no compensation net: drop --net / --features")


def fidelity_entry(r: Dict[str, Any]) -> Dict[str, Any]:
    """The compact per-level record stored in the bundle header."""
    out = {"novel_psnr": r["novel"]["psnr"], "novel_ssim": r["novel"]["ssim"],
           "worst_psnr": r["worst"]["psnr"], "worst_view": r["worst"]["name"], "novel_views": r["novel"]["n_views"]}
    if "near" in r:
        out["near_psnr"] = r["near"]["psnr"]
    return out


def format_level_line(lv: Dict[str, Any]) -> str:
    """One line per level for the compress summary (used by ``cli.py``)."""
    line = (f"  level {lv['level']}: ratio {lv['ratio']:g}, {lv['count']:,} Gaussians, "
            f"{lv.get('bytes', 0) / 1e3:.1f} KB (readable after the first {lv.get('prefix_bytes', 0) / 1e3:.1f} KB)")
    if lv.get("novel_psnr") is not None:
        line += f", novel views {lv['novel_psnr']:.2f} dB (worst {lv['worst_psnr']:.2f})"
    t = lv.get("target")
    if t:
        line += f"; target {t['requested']:g} dB {'reached' if t['reached'] else 'NOT reached'}"
    return line


def level_note(gs, path) -> Optional[str]:
    """Which level of a ladder a command uses, in one line (None for a single-level scene)."""
    m = getattr(gs, "meta", None) or {}
    if m.get("levels") is None or m.get("level") is None:
        return None
    k, n = m["level"], m["levels"]
    which = "finest" if k == n - 1 else ("coarsest" if k == 0 else "")
    return (f"level {k} of {Path(path).name} ({which + ', ' if which else ''}{len(gs):,} Gaussians; "
            f"levels 0-{n - 1}, 0 = coarsest; --level N picks another)")

