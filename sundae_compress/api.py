"""The importable pipeline: PLY → prune (+ merge) → optional fine-tune + net → ``.sundae``.

Each stage lives in its own package (``io``, ``prune``, ``compensate``, ``codec``); this module
wires them together in reading order, keeps the report honest (counts, bytes, seconds per stage)
and makes every decision once: the budget (:class:`~.prune.select.Budget`), the merge mode
(:func:`resolve_merge`), the output names (:func:`default_bundle_path`, :func:`default_decoded_path`),
which cameras a command uses and where they come from (:func:`choose_views`, :func:`training_views`)
and the training photos. It never prints: one-line notices go to the ``notify`` callback the
command line passes (``cli.py`` / ``batch.py`` own all printing).

>>> from sundae_compress import compress
>>> report = compress("scene.ply", "scene.sundae", ratio=0.1, finetune=False)
>>> print(report.summary())
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import SundaeError
from .gaussians import GaussianSet

Notify = Optional[Callable[[str], None]]

#: ``--ratio`` when neither ratio nor count is given.
DEFAULT_RATIO = 0.1
#: Properties every standard 3DGS PLY carries and the reader does not use (unworthy of a notice).
STANDARD_UNUSED_PROPERTIES = ("nx", "ny", "nz")
#: File names a scene's training cameras go by, looked for next to the scene.
CAMERA_FILE_NAMES = ("cameras.json", "transforms.json")
#: ``--cameras orbit``: generated orbit views even when a camera file lies next to the scene.
ORBIT = "orbit"
#: Generated views of ``sundae-render`` / ``sundae-eval``: count and size.
DEFAULT_VIEWS = 8
DEFAULT_VIEW_SIZE = (320, 240)
#: Generated views for evaluation use another seed than fine-tuning's (seed 0), so their azimuths
#: never coincide with a training view.
EVAL_VIEW_SEED = 1
#: Every ``HOLDOUT_EVERY``-th view of a camera file is held out from fine-tuning (and evaluated on).
HOLDOUT_EVERY = 8

#: ``merge="auto"``: pairwise edge collapse measured best at 10 % on every shared scene (guitar 33.87 dB
#: vs 32.88 for spectral selection + assignment; benchmarks/results/prune_quality.md) but costs ~6 µs
#: per Gaussian, mostly on one core (1 M: 5 s, 4.9 M: 30 s; benchmarks/results/merge_speed.md). Up to
#: this many Gaussians it stays under ~10 s; above it, spectral selection + assignment (4.9 M: ~7 s).
COLLAPSE_MAX_GAUSSIANS = 1_500_000


def resolve_merge(merge, n: int) -> Optional[str]:
    """``"auto"`` → ``"collapse"`` up to :data:`COLLAPSE_MAX_GAUSSIANS`, else ``"assign"``;
    None / "none" / False → no merging (selection only)."""
    if merge == "auto":
        return "collapse" if n <= COLLAPSE_MAX_GAUSSIANS else "assign"
    if merge in (None, "none", False):
        return None
    if merge not in ("assign", "collapse"):
        raise SundaeError(f"unknown merge mode {merge!r}; choose assign, collapse or none")
    return merge


def resolve_codec_settings(quality: Optional[str] = None, settings=None):
    """The codec settings of a run: explicit ``settings`` win, else the ``quality`` preset
    (None = the default preset). Raises :class:`SundaeError` for an unknown preset or both given."""
    from .codec import quality_settings

    if settings is not None:
        if quality is not None:
            raise SundaeError("give either a quality preset or explicit codec settings, not both")
        return settings
    try:
        return quality_settings(quality)
    except ValueError as e:
        raise SundaeError(str(e)) from None


@dataclass
class CompressReport:
    input: str
    output: str
    source_count: int = 0
    valid_count: int = 0
    kept_count: int = 0
    dropped_rows: int = 0
    ignored_properties: List[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    stages: Dict[str, float] = field(default_factory=dict)
    method: str = "spectral"
    merge: Optional[str] = None
    finetune: Dict[str, Any] = field(default_factory=dict)
    net_bytes: int = 0
    format: str = "sundae"
    #: decisions the user is told about (one line each; also sent to ``notify``)
    notes: List[str] = field(default_factory=list)
    cameras: Optional[str] = None  # which cameras fine-tuning used, and where they came from
    #: the written output scored against the source: near / novel / worst view (``evaluate_view_sets``)
    fidelity: Dict[str, Any] = field(default_factory=dict)
    #: ``--target-psnr`` / ``--target-size``: what was asked, what was chosen and achieved (else empty)
    target: Dict[str, Any] = field(default_factory=dict)
    #: a level-of-detail ladder (``lod``): one entry per level, coarse to fine (ratio, count, bytes,
    #: prefix_bytes, novel_psnr, worst_psnr, ...); empty for a single-level output
    levels: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0

    def summary(self) -> str:
        line = (f"{Path(self.input).name}: {self.valid_count:,} → {self.kept_count:,} Gaussians, "
                f"{self.bytes_in / 1e6:.2f} MB → {self.bytes_out / 1e6:.3f} MB "
                f"({self.ratio:.1f}x) in {self.seconds:.1f} s")
        q = self.fidelity
        if q.get("novel"):
            line += (f"; {q['novel'].get('label', 'novel views')} {q['novel']['psnr']:.2f} dB PSNR "
                     f"(worst {q['worst']['psnr']:.2f}), {q['near'].get('label', 'near views')} "
                     f"{q['near']['psnr']:.2f} dB")
        else:  # say so rather than end silently: the evaluation renders ~20 views of both scenes
            line += (f"; novel-view PSNR not measured ({'--no-finetune skips it' if not self.finetune else 'not asked'}: "
                     f"add --eval, or run sundae-eval)")
        t = self.target
        if t:
            asked = f"{t['requested']:g} dB" if t["kind"] == "psnr" else f"{t['requested']:,} bytes"
            line += (f"; target {asked} {'reached' if t['reached'] else 'NOT reached'} with the {t['quality']} "
                     f"codec ({t['builds']} build{'s' if t['builds'] != 1 else ''}, {t['probes']} probes)")
        return line

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


# ----------------------------------------------------------------------------------------------
# files: names, the user's source scene, bundles given as scenes
# ----------------------------------------------------------------------------------------------
def default_bundle_path(scene) -> Path:
    """``scene.ply`` → ``scene.sundae`` (next to it)."""
    return Path(scene).with_suffix(".sundae")


def default_output_path(scene, fmt: str) -> Path:
    """``scene.ply`` → ``scene<suffix of fmt>`` next to it; ``scene.pruned.ply`` for ``ply`` (never
    the scene's own name)."""
    from .io.formats import output_path

    out = output_path(scene, fmt)
    if out.name == Path(scene).name:
        out = out.with_name(out.name[: -len(out.suffix)] + ".pruned" + out.suffix)
    return out


#: What a compress to a format without the compensation net does: the Gaussians are still
#: fine-tuned (that carries +4.8 to +6.9 dB on the shared scenes), but no net is trained (it would
#: be dropped: <= 0.1 dB there, benchmarks/results/finetune.md) and no feature channels are learned.
NO_NET_FINETUNE = {"net": False, "features": 0, "quantise_aware": "none"}


def no_net_note(fmt: str, net_bytes: int = 0) -> str:
    from .io.formats import FORMATS

    what = f"the bundle's compensation net ({net_bytes / 1e3:.1f} KB)" if net_bytes else "a compensation net"
    return (f"{what} cannot travel in {FORMATS[fmt].suffix}: viewers render the Gaussians alone"
            + ("" if net_bytes else " (fine-tuning the Gaussians only, no net trained)"))


def default_decoded_path(bundle, fmt: str = "ply") -> Path:
    """``X.sundae`` → ``X.decoded.ply``: never the name of the ``X.ply`` it was probably made from
    (``X.decoded.spz`` etc. for the other formats)."""
    from .io.formats import FORMATS

    return Path(bundle).with_suffix(".decoded" + FORMATS[fmt].suffix)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(output: Path, overwrite: bool, source: Optional[Path] = None) -> None:
    if source is not None and (_same_file(output, source) or output.resolve() == source.resolve()):
        raise SundaeError(f"{output} is the input scene itself; choose another output name")
    if output.exists() and output.is_dir():
        raise SundaeError(f"{output} is a directory, expected a file path")
    if output.exists() and not overwrite:
        raise SundaeError(f"{output} already exists (use --overwrite to replace it)")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.exists():
        raise SundaeError(f"output folder {parent} does not exist")


def _is_bundle(path: Path) -> bool:
    from .io.bundle import MAGIC

    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def recorded_source(output: Path, source_info: Optional[dict]) -> bool:
    """True when ``output`` is (by name or by exact size) the source scene a bundle's header
    records (``source_info`` = the header's ``source``): the one file decompressing must not replace."""
    src = source_info or {}
    if not output.is_file():
        return False
    if src.get("file") and output.name == src["file"]:
        return True
    return isinstance(src.get("bytes"), int) and src["bytes"] > 0 and output.stat().st_size == src["bytes"]


def source_warning(scene_path, scene: GaussianSet, candidate_path) -> Optional[str]:
    """``sundae-eval SCENE CANDIDATE``: None when CANDIDATE is not a bundle, records no source, or
    records ``scene`` as its source (same Gaussian count; same name or same file size); else one
    line for the user (without the ``warning:`` prefix) saying that the PSNRs compare a bundle with
    another scene than the one it was made from ("clearly" when the counts differ by more than 10 %
    or the bundle holds more Gaussians than the scene; "may not be" for smaller differences)."""
    scene_path, candidate_path = Path(scene_path), Path(candidate_path)
    if not _is_bundle(candidate_path):
        return None
    from .io.bundle import inspect_bundle

    d = inspect_bundle(candidate_path)
    src = d.get("source") or {}
    rec_name, rec_bytes = src.get("file"), src.get("bytes")
    rec_count = src.get("valid") if isinstance(src.get("valid"), int) else src.get("count")
    if not isinstance(rec_count, int):
        return None
    n = len(scene)
    size = scene_path.stat().st_size if scene_path.is_file() else None
    same_name = rec_name == scene_path.name
    same_size = isinstance(rec_bytes, int) and size == rec_bytes
    if n == rec_count and (same_size or (same_name and not isinstance(rec_bytes, int))):  # it, or a renamed copy
        return None
    rec = f"{candidate_path.name} was made from {rec_name or '?'} ({rec_count:,} Gaussians"
    rec += f", {rec_bytes:,} bytes)" if isinstance(rec_bytes, int) else ")"
    this = f"{scene_path.name} has {n:,} Gaussians" + (f", {size:,} bytes" if size is not None else "")
    if n != rec_count and (abs(n - rec_count) > 0.1 * rec_count or int(d.get("count") or 0) > n):
        verdict = f"{scene_path.name} is clearly another scene"
    else:
        verdict = f"{scene_path.name} may not be that scene"
    return f"{rec}; {this}: {verdict}, so these PSNRs compare different scenes (evaluating anyway)"


# ----------------------------------------------------------------------------------------------
# cameras and photos: which views a command uses, and one line saying where they came from
# ----------------------------------------------------------------------------------------------
@dataclass
class Views:
    """Cameras chosen for a command (None: let fine-tuning generate its own orbit views) and
    ``source``, one line for the user saying which cameras these are and where they came from."""
    cameras: Optional[list]
    source: str
    images: Optional[list] = None


def find_cameras_for(scene_path) -> Optional[Path]:
    """cameras.json of a 3DGS output dir (OUT/point_cloud/iteration_N/point_cloud.ply ->
    OUT/cameras.json), or a cameras.json / transforms.json next to the PLY; None if absent."""
    p = Path(scene_path).resolve()
    cands = []
    for parent in p.parents:
        if parent.name == "point_cloud":
            cands.append(parent.parent / "cameras.json")
            break
    cands += [p.parent / name for name in CAMERA_FILE_NAMES]
    return next((c for c in cands if c.is_file()), None)


def _camera_file(scene_path, cameras) -> Tuple[Optional[Path], str]:
    """(camera file or None for generated views, why) for ``--cameras`` = None/"auto"/"orbit"/a path."""
    if cameras is None or str(cameras) == "auto":
        found = find_cameras_for(scene_path) if scene_path is not None else None
        if found is not None:
            return found, f"found next to {Path(scene_path).name}; --cameras orbit to generate views instead"
        where = f" next to {Path(scene_path).name}" if scene_path is not None else ""
        return None, f"no {' or '.join(CAMERA_FILE_NAMES)}{where}"
    if str(cameras) == ORBIT:
        return None, "--cameras orbit"
    return Path(cameras), "--cameras"


def _size_text(cams) -> str:
    sizes = sorted({(c.width, c.height) for c in cams})
    return f"{sizes[0][0]}x{sizes[0][1]}" + (" and other sizes" if len(sizes) > 1 else "")


def choose_views(gs, scene_path=None, *, cameras=None, views: Optional[int] = None, size=None, up=None,
                 held_out: bool = False) -> Views:
    """Views for rendering or evaluating a scene (``sundae-render``, ``sundae-eval``).

    ``cameras``: None (a camera file next to the scene if there is one, see :func:`find_cameras_for`,
    else generated), :data:`ORBIT` (generated), or a camera file. Generated: ``views`` (default
    :data:`DEFAULT_VIEWS`) orbit views at ``size`` (default :data:`DEFAULT_VIEW_SIZE`). A camera file:
    its views (the first ``views``), at ``size`` if given. With ``held_out``, only views fine-tuning
    never trains on: the held-out split of a camera file (every :data:`HOLDOUT_EVERY`-th), or
    generated views at another azimuth phase (:data:`EVAL_VIEW_SEED`)."""
    from .render.cameras import load_cameras

    path, why = _camera_file(scene_path, cameras)
    return _views_from(gs, path, why, load_cameras(path) if path is not None else None, views=views, size=size,
                       up=up, held_out=held_out)


def _views_from(gs, path: Optional[Path], why: str, all_cams: Optional[list], *, views: Optional[int], size, up,
                held_out: bool) -> Views:
    """:func:`choose_views` once its camera file is chosen (``path``, ``why``; None: generated views)
    and loaded (``all_cams``: every camera in ``path``)."""
    from .render.cameras import generate_cameras, split_views

    if path is not None:
        cams = all_cams
        what = f"{len(all_cams)}"
        if held_out:
            cams = split_views(all_cams, HOLDOUT_EVERY)[1]
            what = f"{len(cams)} held-out (every {HOLDOUT_EVERY}th) of the {len(all_cams)}"
        if size is not None:
            cams = [c.scaled(*size) for c in cams]
        if views and views < len(cams):
            what = f"the first {views} of " + (f"those {len(cams)}" if held_out else what)
            cams = cams[:views]
        return Views(cams, f"cameras: {what} views in {path} at {_size_text(cams)} ({why})")
    w, h = size or DEFAULT_VIEW_SIZE
    n = views or DEFAULT_VIEWS
    cams = generate_cameras(gs, n=n, width=w, height=h, up=up, seed=EVAL_VIEW_SEED if held_out else 0)
    return Views(cams, f"cameras: {n} generated orbit views at {w}x{h} ({why})")


def training_views(scene_path, *, cameras=None, images=None) -> Views:
    """Cameras (and photos) for fine-tuning: a camera file (given, or found next to the scene) or,
    with ``cameras=None`` in the result, the orbit views fine-tuning generates itself. ``cameras``
    may also be an already loaded list of cameras, ``images`` a folder of photos matching them
    (loaded here, :func:`~sundae_compress.io.images.load_images`) or a loaded list."""
    from .render.cameras import load_cameras

    if isinstance(cameras, (list, tuple)):
        cams, line = list(cameras), f"cameras: {len(cameras)} given views"
    else:
        path, why = _camera_file(scene_path, cameras)
        if path is None:
            if images is not None:
                raise SundaeError("--images needs --cameras describing those photos")
            return Views(None, f"cameras: generated orbit views around the scene ({why})")
        cams = load_cameras(path)
        line = f"cameras: {len(cams)} views in {path} at {_size_text(cams)} ({why})"
    imgs = None
    if isinstance(images, dict):
        imgs = images
    elif images is not None:
        if not isinstance(images, (list, tuple)):
            from .io.images import load_images

            line += f", photos from {images}"
            images = load_images(images, cams)
        imgs = {c.name: img for c, img in zip(cams, images)}  # what fine-tuning looks photos up by
    return Views(cams, line, imgs)


# ----------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------
def load_scene(path, *, strict: bool = False, sh_degree: Optional[int] = None) -> GaussianSet:
    """Read a scene: a 3DGS PLY (see :func:`sundae_compress.io.ply.read_ply`), or a
    ``.compressed.ply`` / ``.spz`` / ``.sog`` (see :mod:`sundae_compress.io.formats`)."""
    from .io.formats import format_of_path, is_compressed_ply_file, read_scene
    from .io.ply import read_ply

    path = Path(path)
    if path.is_file() and _is_bundle(path):
        raise SundaeError(f"{path} is a .sundae bundle, not a PLY scene "
                          f"(sundae-decompress turns it back into a PLY)")
    if format_of_path(path) in (None, "ply", "sundae") and not is_compressed_ply_file(path):
        return read_ply(path, strict=strict, sh_degree=sh_degree)
    gs = read_scene(path)
    if sh_degree is not None:
        if sh_degree > gs.sh_degree:
            raise SundaeError(f"{path} holds SH degree {gs.sh_degree}; cannot read it with SH degree {sh_degree}")
        gs = gs.with_sh_degree(sh_degree)
    return gs


def prune_scene(gs: GaussianSet, *, ratio=None, count=None, method="spectral", gamma=0.5,
                merge: Optional[str] = "auto", seed: int = 0) -> GaussianSet:
    """Keep exactly the budget: select with ``method`` and fold the rest in (``merge``), or with
    ``merge="collapse"`` merge pairs until the budget is reached (the selector is then unused)."""
    from .prune.select import resolve_budget

    return _prune(gs, resolve_budget(len(gs), ratio=ratio, count=count), method, gamma,
                  resolve_merge(merge, len(gs)), seed)


def _prune(gs: GaussianSet, count: int, method: str, gamma: float, merge: Optional[str], seed: int):
    from .prune.merge import prune

    return prune(gs, count, method=method, gamma=gamma, merge=merge, seed=seed)


def _pruner(method: str, gamma: float, merge: Optional[str], seed: int) -> Callable[[GaussianSet, int], GaussianSet]:
    """``prune_to(gs, count)`` with these selection / merge settings (for the search and the hooks)."""
    def prune_to(gs: GaussianSet, count: int) -> GaussianSet:
        return _prune(gs, int(count), method, gamma, merge, seed)

    return prune_to


def finetune_hooks(settings=None, *, method="spectral", gamma=0.5, merge=None, seed=0, codec_layout=None):
    """The pipeline stages fine-tuning calls: prune to a count (continuous pruning) and the codec
    round trip decode(encode(gs)) with rows in ``gs``'s order (quantisation-aware polish), in codec
    layout ``codec_layout`` (default the one single-level bundles are written in; ladders: 2)."""
    from .compensate.config import Hooks

    prune_to = _pruner(method, gamma, merge, seed)

    def roundtrip(gs: GaussianSet) -> GaussianSet:
        import numpy as np

        from .codec import decode_gaussians, encode_gaussians, morton_sort

        sections, meta = (encode_gaussians(gs, settings) if codec_layout is None
                          else encode_gaussians(gs, settings, version=codec_layout))
        _, order = morton_sort(gs, settings)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        return decode_gaussians(sections, meta).subset(inv).replace(meta=dict(gs.meta))

    return Hooks(prune=prune_to, roundtrip=roundtrip)


class EvalViews(tuple):
    """``(near, novel, source line)`` of :func:`evaluation_views` (unpacks like a tuple), with
    ``labels``: what each set is, in the words every printed figure uses, e.g. ``{"near":
    "camera-file views (3 held out, 640x480)", "novel": "novel views (12, 480x360)"}``."""
    labels: Dict[str, str]


def evaluation_views(gs: GaussianSet, scene_path=None, *, cameras=None, views=None, size=None, up=None,
                     scene_frame: bool = False):
    """``(near, novel, source line)``: the views ``sundae-eval``, ``--eval`` and the compress summary
    score (an :class:`EvalViews`, whose ``labels`` name them). near: :func:`choose_views` with
    ``held_out`` (the held-out split of a camera file, or generated orbit views at another azimuth
    phase); novel: the views the fine-tuning sampler never draws
    (:func:`sundae_compress.render.cameras.novel_views`, at ``size`` or 480x360), placed in the frame
    fine-tuning used (:meth:`~sundae_compress.render.cameras.ViewFrame.of`: the capture's cameras
    when they surround one point, else the scene's content).

    Which cameras give that frame: by default ``cameras``, the ones compress / batch ``--eval`` just
    trained on. ``scene_frame=True`` (``sundae-eval``, whose ``--cameras`` only picks the views to
    score): the scene's own camera file next to it (:func:`find_cameras_for`, what compress trains on
    by default), else its content, so a camera file of another capture cannot move the novel views.
    A camera file is read once."""
    from .render.cameras import NOVEL_SIZE, ViewFrame, load_cameras, novel_views, split_views

    path = None
    if isinstance(cameras, (list, tuple)):
        real = list(cameras)
        near, line = split_views(real, HOLDOUT_EVERY)[1], f"cameras: held-out of {len(cameras)} given views"
        if size is not None:
            near = [c.scaled(*size) for c in near]
        near_label = f"given-camera views ({len(near)} held out, {_size_text(near)})"
    else:
        path, why = _camera_file(scene_path, cameras)
        real = load_cameras(path) if path is not None else None  # loaded once: near views and frame
        chosen = _views_from(gs, path, why, real, views=views, size=size, up=up, held_out=True)
        near, line = chosen.cameras, chosen.source
        near_label = (f"camera-file views ({len(near)} held out, {_size_text(near)})" if path is not None
                      else f"orbit views ({len(near)} generated, {_size_text(near)})")
    if scene_frame:
        own = find_cameras_for(scene_path) if scene_path is not None else None
        if own is None:
            real = None
        elif path is None or not _same_file(own, path):
            try:
                real = load_cameras(own)
            except SundaeError:  # unreadable: compress could not have trained on it either
                real = None
    # the frame fine-tuning used (the capture's cameras when they surround the scene), so the
    # novel views are the ones its sampler never draws
    frame = ViewFrame.of(gs, up, cameras=real)
    novel = novel_views(frame, size=size or NOVEL_SIZE)
    out = EvalViews((near, novel, line))
    out.labels = {"near": near_label, "novel": f"novel views ({len(novel)}, {_size_text(novel)})"}
    return out


def evaluate_output(original: GaussianSet, path, near, novel, *, side_by_side_path=None,
                    labels: Optional[Dict[str, str]] = None, level: Optional[int] = None) -> Dict[str, Any]:
    """Read a written output back (bundle + net, or another format) and score it against
    ``original`` on ``near`` and ``novel`` views (:func:`sundae_compress.evaluate.evaluate_view_sets`).
    ``labels`` (:attr:`EvalViews.labels`) name each set in the result (``result[set]["label"]``).
    ``level``: a level of a ladder bundle (default the finest); for a ladder the result names the
    level used (``level``, ``levels``, ``level_note``)."""
    from .evaluate import evaluate_view_sets

    cand, post = load_for_render(path, level=level)
    result = evaluate_view_sets(original, cand, {"near": near, "novel": novel}, postprocess=post,
                                side_by_side_path=side_by_side_path)
    _labelled(result, labels)
    note = level_note(cand, path)
    if note:
        result.update(level=cand.meta["level"], levels=cand.meta["levels"], level_note=note)
    return result


def _labelled(result: Dict[str, Any], labels: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """Name each view set of an evaluation result (``result[set]["label"]``) as printed figures do."""
    for name, label in (labels or {}).items():
        if name in result:
            result[name]["label"] = label
    return result


def _read_source(input: Path, report: CompressReport, *, strict: bool, sh_degree, notify) -> GaussianSet:
    """Read the source scene for a compress run, recording its counts, bytes and read time in
    ``report`` and telling ``notify`` about dropped rows and unexpected properties."""
    t = time.perf_counter()
    gs = load_scene(input, strict=strict, sh_degree=sh_degree)
    report.stages["read"] = time.perf_counter() - t
    report.source_count = int(gs.meta.get("source_count", len(gs)))
    report.valid_count = len(gs)
    report.dropped_rows = int(gs.meta.get("dropped_rows", 0))
    report.ignored_properties = list(gs.meta.get("ignored_properties", []))
    report.bytes_in = int(gs.meta.get("source_bytes", os.path.getsize(input)))
    if report.dropped_rows:
        notify(f"{input.name}: dropped {report.dropped_rows:,} rows with NaN/Inf values (--strict refuses them)")
    unexpected = [p for p in report.ignored_properties if p not in STANDARD_UNUSED_PROPERTIES]
    if unexpected:
        notify(f"ignored properties: {', '.join(unexpected)}")
    return gs


def compress(input, output=None, *, ratio: Optional[float] = None, count: Optional[int] = None,
             gamma: float = 0.5, method: str = "spectral", merge: Optional[str] = "auto",
             finetune: bool = True, sh_degree: Optional[int] = None, strict: bool = False,
             overwrite: bool = False, settings=None, cameras=None, images=None,
             finetune_options: Optional[Dict[str, Any]] = None, seed: int = 0,
             notify: Notify = None, format: Optional[str] = None, quality: Optional[str] = None,
             evaluate: Optional[bool] = None, target_psnr: Optional[float] = None,
             target_size=None, best_effort: bool = False, lod=None, lod_psnr=None) -> CompressReport:
    """Compress one PLY scene into a ``.sundae`` bundle; returns a :class:`CompressReport`.

    ``ratio`` (0 < r ≤ 1) or ``count`` sets the number of Gaussians kept (default ratio 0.1).
    ``finetune`` distils the original scene into the pruned one and trains the compensation net,
    on ``cameras`` (see :func:`training_views`: a camera file, "orbit", loaded cameras, or None to
    use a cameras.json next to the scene) and optional ``images``. ``notify`` receives one-line
    notices (the cameras used, dropped rows, unexpected properties) as they happen.
    ``format`` (default: from the output's extension, else ``sundae``) may also be ``ply``,
    ``compressed-ply``, ``spz`` or ``sog`` (:mod:`sundae_compress.io.formats`); those cannot hold the
    compensation net, so fine-tuning then trains the Gaussians only (:data:`NO_NET_FINETUNE`).
    ``quality`` names a codec preset (``max``, ``high``, ``medium`` = default, ``low``; see
    :data:`sundae_compress.codec.QUALITY_PRESETS`); ``settings`` (a CodecSettings) overrides it.
    ``finetune_options`` are :class:`~.compensate.config.FinetuneConfig` fields. ``evaluate``
    (default: when fine-tuning) scores the written output on near and novel views
    (``report.fidelity``; the summary line prints the novel-view PSNR, or says it was not measured).
    Without fine-tuning it is off by default: on playbot_125k (125 k Gaussians) the evaluation took
    7.8 s of CPU against 2.2 s for the conversion itself (45 s / 15 s of wall time at load 19).
    ``target_psnr`` (dB) or ``target_size`` (bytes, or a text like ``"200KB"``) replace ``ratio`` /
    ``count``: the budget and codec preset are searched (:func:`compress_to_target`); an unreachable
    PSNR target raises :class:`SundaeError` and writes nothing unless ``best_effort``.
    ``lod`` (``"0.01,0.05,0.2"`` or a list of ratios) writes one bundle holding a level-of-detail
    ladder instead, one level per ratio (:func:`_compress_ladder`, decisions in :mod:`sundae_compress.lod`;
    every level is evaluated, ``report.levels``). ``lod_psnr`` (``"28,32,36"`` or a list of dB) writes
    a ladder whose levels are the smallest that reach those novel-view PSNR targets, each searched as
    ``target_psnr`` is (an unreachable level: :class:`SundaeError`, nothing written, unless
    ``best_effort``: the ladder then ends with the best level found).
    """
    from .io.bundle import write_bundle
    from .io.formats import FORMATS, resolve_format, write_scene
    from .prune.select import Budget

    say = notify or (lambda _msg: None)
    t0 = time.perf_counter()
    input = Path(input)
    fmt = resolve_format(output, format)
    if lod is not None or lod_psnr is not None:
        from .lod import check_options

        check_options(fmt=fmt, finetune_options=finetune_options, ratio=ratio, count=count, lod=lod,
                      lod_psnr=lod_psnr, target_psnr=target_psnr, target_size=target_size, best_effort=best_effort)
        return _compress_ladder(input, output, lod, lod_psnr=lod_psnr, best_effort=best_effort, gamma=gamma,
                                method=method, merge=merge, finetune=finetune,
                                sh_degree=sh_degree, strict=strict, overwrite=overwrite, settings=settings,
                                cameras=cameras, images=images, finetune_options=finetune_options, seed=seed,
                                notify=notify, quality=quality, evaluate=evaluate)
    output = Path(output) if output is not None else default_output_path(input, fmt)
    if not FORMATS[fmt].carries_net and finetune:
        opts = dict(finetune_options or {})
        if opts.get("features"):
            raise SundaeError(f"--features needs the compensation net, which {FORMATS[fmt].suffix} cannot hold")
        finetune_options = {**opts, **NO_NET_FINETUNE}
    if input.is_file() and _is_bundle(input):
        load_scene(input)  # the one-line "is a bundle, not a PLY" error
    _check_output(output, overwrite, source=input)
    target = check_target_options(ratio, count, target_psnr, target_size, fmt, best_effort)
    given_settings = settings
    settings = resolve_codec_settings(quality, settings)
    wanted = Budget.parse(ratio, count) if (ratio, count) != (None, None) else Budget.parse(DEFAULT_RATIO)
    views = training_views(input, cameras=cameras, images=images) if finetune else None
    report = CompressReport(input=str(input), output=str(output), method=method, format=fmt)
    if not FORMATS[fmt].carries_net and finetune:
        report.notes.append(no_net_note(fmt))
        say(report.notes[-1])

    gs = _read_source(input, report, strict=strict, sh_degree=sh_degree, notify=say)

    report.merge = resolve_merge(merge, len(gs))
    if target is not None:
        return compress_to_target(report, gs, target, t0=t0, method=method, gamma=gamma, finetune=finetune,
                                  finetune_options=finetune_options, views=views, cameras=cameras, seed=seed,
                                  quality=quality, settings=given_settings,
                                  best_effort=best_effort, notify=say)
    t = time.perf_counter()
    budget = wanted.of(len(gs))
    net_bytes = None
    net_meta = None
    if finetune:
        report.cameras = views.source
        say(views.source)
        scheduled = (finetune_options or {}).get("prune_schedule")
        pruned = _prune(gs, budget, method, gamma, report.merge, seed) if not scheduled else gs
        report.stages["prune"] = time.perf_counter() - t
        t = time.perf_counter()
        kept, net_bytes, net_meta, report.finetune = _finetune_to(
            gs, pruned, budget, settings, views=views, finetune_options=finetune_options, method=method,
            gamma=gamma, merge=report.merge, seed=seed)
        report.stages["finetune"] = time.perf_counter() - t
    else:
        kept = _prune(gs, budget, method, gamma, report.merge, seed)
        report.stages["prune"] = time.perf_counter() - t
    report.kept_count = len(kept)

    t = time.perf_counter()
    bundle_info = {
        "source": {"file": input.name, "bytes": report.bytes_in, "count": report.source_count,
                   "valid": report.valid_count, "dropped_rows": report.dropped_rows},
        "pipeline": {"ratio": wanted.ratio, "count": budget, "quality": quality,
                     "method": None if report.merge == "collapse" else method,  # collapse uses no selector
                     "gamma": gamma,
                     "merge": report.merge, "finetune": report.finetune or None},
    }
    if fmt == "sundae":
        write_bundle(output, kept, settings=settings, net=net_bytes, net_meta=net_meta, info=bundle_info)
    else:
        write_scene(kept, output, fmt)
    report.stages["write"] = time.perf_counter() - t
    report.bytes_out = os.path.getsize(output)
    report.net_bytes = len(net_bytes) if net_bytes else 0
    if finetune if evaluate is None else evaluate:
        t = time.perf_counter()
        ev = evaluation_views(gs, input, cameras=cameras)
        report.fidelity = evaluate_output(gs, output, ev[0], ev[1], labels=ev.labels)
        report.stages["evaluate"] = time.perf_counter() - t
    report.seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------------------------
# --target-psnr / --target-size
# ----------------------------------------------------------------------------------------------
def check_target_options(ratio, count, target_psnr, target_size, fmt: str, best_effort: bool):
    """``("psnr", dB)`` / ``("size", bytes)`` for a target run, None otherwise; a
    :class:`SundaeError` for conflicting options (before any file is read)."""
    from .quality.targets import check_target_psnr, parse_size

    if target_psnr is None and target_size is None:
        if best_effort:
            raise SundaeError("--best-effort applies to --target-psnr")
        return None
    if target_psnr is not None and target_size is not None:
        raise SundaeError("give --target-psnr or --target-size, not both")
    which = "--target-psnr" if target_psnr is not None else "--target-size"
    if ratio is not None or count is not None:
        raise SundaeError(f"{which} chooses the number of Gaussians itself; drop --ratio / --count")
    if fmt != "sundae":
        raise SundaeError(f"{which} writes .sundae bundles (its measurements are of the bundle); got a .{fmt} output")
    if target_size is not None:
        if best_effort:
            raise SundaeError("--best-effort applies to --target-psnr (--target-size always writes the best that fits)")
        return ("size", parse_size(target_size))
    return ("psnr", check_target_psnr(target_psnr))


def compress_to_target(report: CompressReport, gs: GaussianSet, target, *, t0: float, method: str, gamma: float,
                       finetune: bool, finetune_options, views, cameras, seed: int, quality, settings,
                       best_effort: bool, notify) -> CompressReport:
    """The rest of :func:`compress` for ``target = ("psnr", dB)`` or ``("size", bytes)``: search the
    budget (:mod:`sundae_compress.quality.targets`), write the chosen bundle with the achieved
    novel-view PSNR in its header (``pipeline.target``), fill the report."""
    from .io.atomic import atomic_write
    from .quality.stages import SceneStages, bundle_bytes
    from .quality.targets import PRESETS, search_psnr, search_size

    kind, value = target
    output = Path(report.output)
    opts = dict(finetune_options or {})
    if settings is not None:
        qualities, pick = ("custom",), (lambda _q: settings)
    else:
        qualities = (quality,) if quality is not None else PRESETS
        pick = resolve_codec_settings

    def info(count, q, summary, achieved=None):
        tgt = {"kind": kind, "requested": value, "novel_psnr": 100.0, "worst_psnr": 100.0, "reached": False,
               "builds": 0, "probes": 0}
        tgt.update(achieved or {})
        return {"source": {"file": Path(report.input).name, "bytes": report.bytes_in, "count": report.source_count,
                           "valid": report.valid_count, "dropped_rows": report.dropped_rows},
                "pipeline": {"ratio": None, "count": count, "quality": q,
                             "method": None if report.merge == "collapse" else method, "gamma": gamma,
                             "merge": report.merge, "finetune": summary or None, "target": tgt}}

    prune_to = _pruner(method, gamma, report.merge, seed)

    run_ft = None
    if finetune:
        report.cameras = views.source
        notify(views.source)

        def tune(pruned, count, codec):
            return _finetune_to(gs, pruned, count, codec, views=views, finetune_options=opts, method=method,
                                gamma=gamma, merge=report.merge, seed=seed)

        run_ft = tune

    ev = evaluation_views(gs, report.input, cameras=cameras)
    near, novel, _ = ev
    stages = SceneStages(gs, prune=prune_to, finetune=run_ft, settings=pick, info=info, read=load_for_render,
                         novel=novel, near=near,
                         notify=notify)
    t = time.perf_counter()
    if kind == "psnr":
        outcome = search_psnr(value, len(gs), stages.probe, stages.size, stages.build, finetune=finetune,
                              qualities=qualities, notify=notify, trim=stages.trim)
    else:
        outcome = search_size(value, len(gs), stages.probe, stages.size, stages.build, qualities=qualities,
                              notify=notify)
    report.stages["search"] = time.perf_counter() - t
    b = outcome.built
    if kind == "psnr" and not outcome.reached and not best_effort:
        raise SundaeError(f"--target-psnr {value:g} dB is out of reach: the best found is {b.psnr:.2f} dB novel-view "
                          f"PSNR ({b.count:,} of {len(gs):,} Gaussians, {b.quality} codec"
                          f"{', fine-tuned' if b.finetuned else ''}); nothing written (--best-effort writes it)")
    t = time.perf_counter()
    report.fidelity = _labelled(stages.fidelity(b), ev.labels)
    report.stages["evaluate"] = time.perf_counter() - t
    report.target = dict(outcome.to_dict(), requested=value, novel_psnr=round(b.psnr, 2),
                         worst_psnr=round(report.fidelity["worst"]["psnr"], 2), trials=outcome.trials)
    achieved = {k: report.target[k] for k in ("novel_psnr", "worst_psnr", "reached", "builds", "probes")}
    p = b.payload
    data = bundle_bytes(p["gaussians"], p["settings"], net=p["net"], net_meta=p["net_meta"],
                        info=info(b.count, b.quality, p["finetune"], achieved))
    if kind == "size" and len(data) > value:  # the search keeps slack for these fields; never exceed
        raise SundaeError(f"internal error: the chosen bundle is {len(data):,} bytes, over --target-size {value:,}")
    if not outcome.reached:
        report.notes.append(f"target {value:g} dB not reached: writing the best found, {b.psnr:.2f} dB (--best-effort)")
        notify(report.notes[-1])
    t = time.perf_counter()
    with atomic_write(output, fsync=True) as f:
        f.write(data)
    report.stages["write"] = time.perf_counter() - t
    report.kept_count = b.count
    report.finetune = p["finetune"] or {}
    report.bytes_out = os.path.getsize(output)
    report.net_bytes = len(p["net"]) if p["net"] else 0
    report.seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------------------------
# level-of-detail ladders (``compress(lod=...)``; decisions and measurements in lod.py)
# ----------------------------------------------------------------------------------------------
def _compress_ladder(input, output, lod, *, lod_psnr=None, best_effort: bool = False, gamma: float = 0.5,
                     method: str = "spectral", merge="auto",
                     finetune: bool = True, sh_degree=None, strict: bool = False, overwrite: bool = False,
                     settings=None, cameras=None, images=None, finetune_options=None, seed: int = 0,
                     notify=None, quality: Optional[str] = None, evaluate: Optional[bool] = None):
    """:func:`sundae_compress.compress` with ``lod`` or ``lod_psnr``: one ladder bundle (format version
    3), one level per ratio or per PSNR target, coarse first. Returns a
    :class:`~sundae_compress.CompressReport` whose ``levels`` lists every level (count, bytes, prefix
    bytes, novel / worst / near PSNR, seconds; with ``lod_psnr`` its target) and whose top-level
    figures are the finest level's. ``evaluate`` (default on; always with ``lod_psnr``) measures every
    level."""
    from .io.ladder import decoded_levels, write_ladder
    from .lod import fidelity_entry, level_counts, level_settings, parse_lod, parse_lod_psnr

    say = notify or (lambda _msg: None)
    t0 = time.perf_counter()
    input = Path(input)
    ratios = parse_lod(lod) if lod_psnr is None else None
    targets = parse_lod_psnr(lod_psnr) if lod_psnr is not None else None
    n_levels = len(targets or ratios)
    output = Path(output) if output is not None else default_bundle_path(input)
    if input.is_file() and _is_bundle(input):
        load_scene(input)  # the one-line "is a bundle, not a PLY" error
    _check_output(output, overwrite, source=input)
    for k in range(n_levels):
        level_settings(quality, settings, k, n_levels)
    views = training_views(input, cameras=cameras, images=images) if finetune else None
    report = CompressReport(input=str(input), output=str(output), method=method, format="sundae")

    gs = _read_source(input, report, strict=strict, sh_degree=sh_degree, notify=say)
    report.merge = resolve_merge(merge, len(gs))
    if finetune:
        report.cameras = views.source
        say(views.source)
    options = dict(method=method, gamma=gamma, merge=report.merge, seed=seed, finetune=finetune, views=views,
                   finetune_options=finetune_options)

    ev = None
    if targets is None:
        counts = level_counts(ratios, len(gs))
        encoded = []
        for k, (r, n) in enumerate(zip(ratios, counts)):
            t = time.perf_counter()
            say(f"level {k} of {n_levels}: ratio {r:g}, {n:,} Gaussians")
            s, preset = level_settings(quality, settings, k, n_levels)
            kept, ft_summary, stages = _ladder_level(gs, n, settings=s, **options)
            for name, sec in stages.items():
                report.stages[name] = report.stages.get(name, 0.0) + sec
            tw = time.perf_counter()
            encoded.append(_encode_ladder_level(kept, s, r, preset, method, gamma, report.merge, ft_summary))
            report.stages["encode"] = report.stages.get("encode", 0.0) + time.perf_counter() - tw
            report.levels.append({"level": k, "ratio": r, "count": n, "quality": preset,
                                  "seconds": round(time.perf_counter() - t, 2)})
            if ft_summary:
                report.levels[-1]["finetune"] = ft_summary
    else:
        ev = evaluation_views(gs, input, cameras=cameras)
        encoded, scored = _ladder_to_targets(gs, targets, report, ev, quality=quality, settings=settings,
                                             best_effort=best_effort, notify=say, **options)
        counts = [len(lv.own) for lv in encoded]
        ratios = [c / len(gs) for c in counts]
    report.kept_count = counts[-1]
    report.finetune = report.levels[-1].get("finetune") or {}

    if targets is not None or evaluate is None or evaluate:
        t = time.perf_counter()
        ev = ev or evaluation_views(gs, input, cameras=cameras)
        near, novel, _ = ev
        from .evaluate import evaluate_view_sets

        refs: Dict[str, list] = {}
        decoded = decoded_levels(encoded) if targets is None else [None] * len(encoded)
        for k, (lv, dec) in enumerate(zip(encoded, decoded)):
            # a --lod-psnr level was decoded and scored on the novel views by its search (only its
            # near views are rendered here); a --lod level is decoded and scored on both
            res = (scored[k]() if targets is not None else
                   evaluate_view_sets(gs, dec, {"near": near, "novel": novel}, references=refs))
            lv.info["fidelity"] = fidelity_entry(res)
            report.levels[k].update(lv.info["fidelity"])
            if k == len(encoded) - 1:
                report.fidelity = _labelled(res, ev.labels)
        report.stages["evaluate"] = time.perf_counter() - t
    if targets is not None:
        for k, lv in enumerate(encoded):
            tgt = lv.info["pipeline"]["target"]
            tgt.update(novel_psnr=lv.info["fidelity"]["novel_psnr"], worst_psnr=lv.info["fidelity"]["worst_psnr"],
                       reached=lv.info["fidelity"]["novel_psnr"] >= tgt["requested"])
            report.levels[k]["target"] = dict(tgt)

    t = time.perf_counter()
    pipeline = {"lod": [round(r, 6) for r in ratios], "counts": counts, "quality": quality, "levels": "independent"}
    if targets is not None:
        pipeline["lod_psnr"] = targets
    info = {"source": {"file": input.name, "bytes": report.bytes_in, "count": report.source_count,
                       "valid": report.valid_count, "dropped_rows": report.dropped_rows},
            "pipeline": pipeline}
    stats = write_ladder(output, encoded, info=info)
    report.stages["write"] = time.perf_counter() - t
    for entry, st in zip(report.levels, stats.levels):
        entry.update(bytes=st["bytes"], prefix_bytes=st["prefix_bytes"])
    report.bytes_out = stats.file_bytes
    report.seconds = time.perf_counter() - t0
    return report


def _encode_ladder_level(kept, settings, ratio, preset, method, gamma, merge, ft_summary, level=None, target=None):
    """One ladder level's encoding with its header entry's pipeline record (``level``: already
    encoded by a target search; ``target``: its ``--lod-psnr`` record)."""
    from .io.ladder import encode_level

    pipeline = {"ratio": ratio, "count": len(kept), "quality": preset,
                "method": None if merge == "collapse" else method, "gamma": gamma,
                "merge": merge, "finetune": ft_summary or None}
    if target is not None:
        pipeline["target"] = target
    if level is None:
        return encode_level(kept, settings, info={"pipeline": pipeline})
    level.info = {"pipeline": pipeline}
    return level


def _ladder_to_targets(gs, targets, report, ev, *, quality, settings, best_effort, notify, method, gamma,
                       merge, seed, finetune, views, finetune_options):
    """The levels of ``--lod-psnr``: per target (coarse first), the budget search of
    ``--target-psnr`` (:func:`~sundae_compress.quality.targets.search_psnr`) on ladder-level stages
    (the level's codec preset, layout 2), the fine-tuning gain measured at one level seeding the
    next level's search. Fills ``report.levels``; returns the encoded levels and, per level, a
    callable giving its near / novel scores (``SceneStages.fidelity``; the novel ones are the search's)."""
    from .lod import check_increasing, level_settings
    from .quality.stages import SceneStages
    from .quality.targets import search_psnr

    near, novel, _ = ev
    presets = [level_settings(quality, settings, k, len(targets)) for k in range(len(targets))]
    by_name = {p if p is not None else "custom": s for s, p in presets}

    prune_to = _pruner(method, gamma, merge, seed)

    def tune(pruned, count, codec):  # ladder levels are stored in codec layout 2
        return _finetune_to(gs, pruned, count, codec, views=views, finetune_options=finetune_options,
                            method=method, gamma=gamma, merge=merge, seed=seed, codec_layout=2)

    stages = SceneStages(gs, prune=prune_to, finetune=tune if finetune else None, settings=by_name.__getitem__, info=None, read=None,
                         novel=novel, near=near, notify=notify, layout=2)
    encoded, gains, chosen = [], [], []
    for k, target in enumerate(targets):
        t = time.perf_counter()
        s, preset = presets[k]
        name = preset if preset is not None else "custom"
        notify(f"level {k} of {len(targets)}: target {target:g} dB novel-view PSNR ({name} codec)")
        out = search_psnr(target, len(gs), stages.probe, stages.size, stages.build, finetune=finetune,
                          qualities=(name,), notify=notify, prior_gains=gains, trim=stages.trim)
        gains += out.gains
        b = out.built
        chosen.append(b)
        record = {"kind": "psnr", "requested": target, "builds": out.builds, "probes": len(out.trials)}
        p = b.payload
        encoded.append(_encode_ladder_level(p["gaussians"], s, b.count / len(gs), preset, method, gamma, merge,
                                            p["finetune"], level=p["level"], target=record))
        report.levels.append({"level": k, "ratio": round(b.count / len(gs), 6), "count": b.count, "quality": preset,
                              "seconds": round(time.perf_counter() - t, 2)})
        if p["finetune"]:
            report.levels[-1]["finetune"] = p["finetune"]
        if not out.reached:
            best = (f"{b.psnr:.2f} dB novel-view PSNR ({b.count:,} of {len(gs):,} Gaussians, {name} codec"
                    f"{', fine-tuned' if b.finetuned else ''})")
            if not best_effort:
                finer = ("" if preset in (None, "max") else
                         f"; level {k} uses the {name} preset, a higher --quality reaches further")
                raise SundaeError(f"--lod-psnr: level {k}'s target {target:g} dB is out of reach: the best found is "
                                  f"{best}{finer}; nothing written (--best-effort writes the ladder up to that level)")
            rest = targets[k + 1:]
            report.notes.append(f"--lod-psnr: target {target:g} dB not reached; level {k} is the best found, {best}"
                                + (f"; no level for {', '.join(f'{x:g}' for x in rest)} dB" if rest else "")
                                + " (--best-effort)")
            notify(report.notes[-1])
            break
    check_increasing([len(lv.own) for lv in encoded], [f"targets {targets[0]:g} dB"]
                     + [f"{x:g} dB" for x in targets[1:len(encoded)]], len(gs), flag="--lod-psnr")
    return encoded, [functools.partial(stages.fidelity, b) for b in chosen]


def _ladder_level(gs, n: int, *, method, gamma, merge, seed, finetune, views, finetune_options, settings):
    """One level's Gaussians: prune the original to ``n`` (and fine-tune), as ``--ratio`` does.
    Returns (GaussianSet, fine-tuning summary or {}, seconds per stage)."""
    stages: Dict[str, float] = {}
    t = time.perf_counter()
    if not finetune:
        kept = _prune(gs, n, method, gamma, merge, seed)
        stages["prune"] = time.perf_counter() - t
        return kept, {}, stages
    pruned = _prune(gs, n, method, gamma, merge, seed) if not (finetune_options or {}).get("prune_schedule") else gs
    stages["prune"] = time.perf_counter() - t
    t = time.perf_counter()
    kept, _, _, summary = _finetune_to(gs, pruned, n, settings, views=views, finetune_options=finetune_options,
                                       method=method, gamma=gamma, merge=merge, seed=seed,
                                       codec_layout=2)  # ladder levels are stored in codec layout 2
    stages["finetune"] = time.perf_counter() - t
    return kept, summary, stages


def _finetune_to(gs: GaussianSet, pruned: GaussianSet, count: int, settings, *, views, finetune_options, method,
                 gamma, merge, seed, codec_layout=None):
    """Fine-tune ``pruned`` (``count`` Gaussians; the whole scene ``gs`` with a prune schedule) by
    distilling ``gs`` on ``views``, with the codec round trip of ``settings`` (``codec_layout``) as a
    hook. Returns ``(Gaussians, ONNX net bytes or None, net metadata or None, summary dict)``."""
    from .compensate.config import FinetuneConfig
    from .compensate.train import finetune as run_finetune

    opts = dict(finetune_options or {})
    cfg = FinetuneConfig.build(seed=seed, target_count=count, **opts)
    hooks = finetune_hooks(settings, method=method, gamma=gamma, merge=merge, seed=seed, codec_layout=codec_layout)
    start = gs if opts.get("prune_schedule") else pruned
    result = run_finetune(gs, start, cfg, cameras=views.cameras, images=views.images, hooks=hooks)
    net = meta = None
    if result.net is not None:
        from .compensate.onnx_io import export_onnx

        net = export_onnx(result.net, half=True)  # fp16 weights: half the bytes, ~1e-5 difference
        meta = dict(result.net_meta(), params=result.net.num_params())
    return result.gaussians, net, meta, result.summary()


def load_bundle(path, level: Optional[int] = None):
    """Read a ``.sundae`` bundle (see :func:`sundae_compress.io.bundle.read_bundle`); ``level``
    picks a level of a level-of-detail ladder (0 = coarsest, default the finest)."""
    from .io.bundle import read_bundle

    return read_bundle(path, level=level)


def load_for_render(path, level: Optional[int] = None):
    """A PLY or a ``.sundae`` bundle → ``(GaussianSet, postprocess)``, where ``postprocess`` maps a
    render to the final RGB through the bundle's compensation net (None when there is none).
    ``level``: a level of a ladder bundle (default the finest; :func:`level_note` says which one
    was used); only bundles have levels."""
    path = Path(path)
    if not path.exists():
        raise SundaeError(f"{path}: no such file")
    if not _is_bundle(path):
        if level is not None:
            raise SundaeError(f"{path} is not a .sundae bundle: --level picks a level of a bundle")
        return load_scene(path), None  # PLY, compressed PLY, spz or SOG
    from .compensate import postprocess_from_bundle

    b = load_bundle(path, level=level)
    return b.gaussians, postprocess_from_bundle(b)


def level_note(gs: GaussianSet, path) -> Optional[str]:
    """One line saying which level of a ladder bundle a command uses (None if it has one level)."""
    from .lod import level_note as note

    return note(gs, path)


def check_image_folder(path, create: bool = False) -> Path:
    """Check the folder ``sundae-render`` will write into, before anything is loaded or rendered:
    not a file, not named like one, creatable or writable; with ``create``, make it (the caller
    does so once the scene has loaded, still before rendering)."""
    path = Path(path)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SundaeError(f"cannot create {path}: {e.strerror or e}") from None
    if path.exists() and not path.is_dir():
        raise SundaeError(f"{path} is a file; -o takes a folder for the PNGs")
    if not path.exists() and path.suffix.lower() in (".ply", ".sundae", ".png", ".jpg", ".jpeg", ".json"):
        raise SundaeError(f"{path} looks like a file name; -o takes a folder for the PNGs")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SundaeError(f"cannot write into {path}: {existing} is not a writable folder")
    return path


def decompress(bundle_path, output=None, *, overwrite: bool = False,
               overwrite_source: bool = False, format: Optional[str] = None,
               notify: Notify = None, level: Optional[int] = None) -> GaussianSet:
    """Decode a bundle's Gaussians into a standard 3DGS PLY that any viewer opens (default name
    :func:`default_decoded_path`), or (``format``, default from the output's extension) a
    ``.compressed.ply`` / ``.spz`` / ``.sog``. ``overwrite`` replaces an existing file, except the
    bundle's own recorded source scene (:func:`recorded_source`), which needs ``overwrite_source`` too.
    None of those formats can carry a compensation net: when the bundle has one, ``notify`` gets
    one line saying so. ``level``: which level of a ladder bundle (default the finest; ``notify``
    gets one line naming it)."""
    from .io.formats import resolve_format, write_scene

    fmt = resolve_format(output, format) if (output is not None or format is not None) else "ply"
    if fmt == "sundae":
        raise SundaeError(f"{output}: decompress writes a scene format (ply, compressed-ply, spz, sog), "
                          f"not a .sundae bundle")
    output = Path(output) if output is not None else default_decoded_path(bundle_path, fmt)
    if _same_file(output, Path(bundle_path)):
        raise SundaeError(f"{output} is the bundle itself; choose another output name")
    _check_output(output, overwrite)
    b = load_bundle(bundle_path, level=level)
    if notify is not None and level_note(b.gaussians, bundle_path):
        notify(level_note(b.gaussians, bundle_path))
    if recorded_source(output, b.header.get("source")) and not overwrite_source:
        raise SundaeError(f"{output} looks like the source scene {bundle_path} was made from "
                          f"(recorded in the bundle); refusing to replace it with the decoded scene "
                          f"(use --overwrite-source if you really mean it)")
    write_scene(b.gaussians, output, fmt)
    if b.net is not None and notify is not None:
        notify(no_net_note(fmt, len(b.net)))
    return b.gaussians
