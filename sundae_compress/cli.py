"""Command line: a thin layer over :mod:`sundae_compress.api`.

Every command turns our own errors (bad input, impossible options) and click's option parsing
errors into one line on stderr, ``error: <message>``, and exit code 1; Ctrl-C exits 130. Nothing
prints a traceback unless ``SUNDAE_DEBUG=1`` is set. This module (with ``batch.py``) owns all
printing and presentation: progress notices go to stderr, results to stdout.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from ._version import __version__
from .errors import SundaeError
from .progress import info, set_quiet

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = EXIT_ERROR):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Command(click.Command):
    """A click command whose own parsing errors follow the project's convention: one line
    ``error: …`` (with a pointer to ``--help``) and exit 1, instead of a usage block and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.UsageError as e:
            msg = e.format_message()
            prog = e.ctx.command_path if e.ctx is not None else (prog_name or self.name)
            _fail(f"{msg[:1].lower()}{msg[1:].rstrip('.')} (see {prog} --help)")
        except click.ClickException as e:
            _fail(e.format_message())
        except click.exceptions.Abort:
            _fail("interrupted", EXIT_INTERRUPTED)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def command(fn):
    """``@command``: a :class:`Command` with ``-h/--help`` and ``--version``."""
    fn = click.version_option(__version__, "--version", message="%(prog)s " + __version__)(fn)
    return click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})(fn)


def guarded(fn):
    """Run a command body, mapping exceptions to one-line errors and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SundaeError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except MemoryError:
            _fail("out of memory (try a smaller --resolution, fewer --iterations or --jobs 1)")
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as e:  # an internal bug: still one line, with a way to get details
            if os.environ.get("SUNDAE_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (set SUNDAE_DEBUG=1 for a traceback)")

    return wrapper


def _parse_size(text):
    if text is None:
        return None
    try:
        w, h = text.lower().split("x")
        w, h = int(w), int(h)
        if w <= 0 or h <= 0 or w > 16384 or h > 16384:
            raise ValueError
        return w, h
    except ValueError:
        raise SundaeError(f"--size must look like 320x240, got {text!r}")


# ----------------------------------------------------------------------------------------------
# sundae-compress
# ----------------------------------------------------------------------------------------------
def _method_choices():
    return ["spectral", "random", "opacity", "importance"]


@command
@click.argument("input")
@click.option("-o", "--output", help="Output .sundae (default IN.sundae), .spz, .sog, .compressed.ply or .ply; "
                                     "a folder (or fsspec folder URL) for batch input.")
@click.option("--ratio", type=float, help="Share of the valid Gaussians to keep, 0 < r <= 1 (default 0.1).")
@click.option("--count", type=int, help="Exact number of Gaussians to keep (instead of --ratio).")
@click.option("--target-psnr", type=float, default=None, metavar="DB",
              help="Instead of --ratio/--count: the smallest bundle whose novel-view PSNR vs the original "
                   "reaches DB (count and --quality preset searched, the final bundle measured; the achieved "
                   "figure is stored in the bundle). Unreachable: error, nothing written. Measured without fine-tuning: "
                   "28-38 dB targets landed 0.00-0.11 dB above on the shared scenes.")
@click.option("--target-size", default=None, metavar="BYTES",
              help="Instead of --ratio/--count: the best novel-view PSNR in at most BYTES (200KB, 1.5MB, 64KiB "
                   "or plain bytes; KB/MB = 1000/1000000 bytes, KiB/MiB = 1024/1048576). Never larger.")
@click.option("--best-effort", is_flag=True,
              help="With --target-psnr / --lod-psnr: when a target is out of reach, write the best found anyway "
                   "(a ladder then ends with that level; exit 0).")
@click.option("--gamma", type=float, default=0.5, show_default=True, help="Band-stop share taken from the high-frequency end.")
@click.option("--method", type=click.Choice(_method_choices()), default="spectral", show_default=True,
              help="Which Gaussians survive: spectral band-stop (SUNDAE), random, most opaque, or largest "
                   "opacity x area. Unused by the collapse merge.")
@click.option("--merge/--no-merge", default=True, show_default=True, help="Fold removed Gaussians into the survivors.")
@click.option("--merge-mode", type=click.Choice(["assign", "collapse"]), default=None, help="Merge algorithm (default: the best measured).")
@click.option("--finetune/--no-finetune", default=True, show_default=True, help="Fine-tune the pruned scene by distilling the original (the compensation net only with --net).")
@click.option("--net/--no-net", default=None, help="Train and ship the compensation U-Net (default off: it gains < 0.3 dB on novel views).")
@click.option("--iterations", type=int, help="Fine-tuning iterations (CPU default 400; more = slower and better, e.g. 1200).")
@click.option("--resolution", type=int, help="Largest fine-tuning image width in pixels (default 400 on CPU).")
@click.option("--features", type=int, default=None, help="Extra learned feature channels per Gaussian for the net.")
@click.option("--prune-schedule", default=None, help="Continuous pruning during fine-tuning, e.g. every=50,share=0.3.")
@click.option("--cameras", help="cameras.json / transforms.json for fine-tuning views, or 'orbit' for generated "
                                "views (default: a cameras.json / transforms.json next to the scene, else orbit).")
@click.option("--images", type=click.Path(path_type=Path), help="Folder of training photos matching --cameras (instead of distillation).")
@click.option("--quality", type=click.Choice(["max", "high", "medium", "low"], case_sensitive=False), default=None,
              help="Codec rate-distortion preset (default medium).")
@click.option("--lod", default=None, metavar="R1,R2,...",
              help="Level-of-detail ladder: one bundle holding one level per ratio, e.g. 0.01,0.05,0.2 "
                   "(coarse levels first, each readable before the rest of the file arrives; levels below "
                   "the finest use the next lower --quality). Instead of --ratio; every level is evaluated.")
@click.option("--lod-psnr", default=None, metavar="DB1,DB2,...",
              help="Level-of-detail ladder by quality: one level per novel-view PSNR target, e.g. 28,32,36, each "
                   "the smallest level that reaches its target (searched as --target-psnr does, at the finest "
                   "level's --quality preset and the next lower one below it; unreachable: error, nothing written, "
                   "unless --best-effort). Instead of --lod / --ratio.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of selection, generated views and fine-tuning (same seed, same bundle).")
@click.option("--sh-degree", type=click.IntRange(0, 3), help="Drop SH bands above this degree.")
@click.option("--strict", is_flag=True, help="Refuse rows with NaN/Inf instead of dropping them.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--format", "fmt", type=click.Choice(["sundae", "ply", "compressed-ply", "spz", "sog"]), default=None,
              help="Output format (default: from the -o extension, else sundae). Only sundae holds the net.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Batch mode: scenes in parallel.")
@click.option("--eval", "do_eval", is_flag=True,
              help="Measure the output's novel-view PSNR also with --no-finetune, which skips it (it renders "
                   "20 views of both scenes, often longer than the conversion); in batch mode, per scene.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Batch mode on a Dask cluster: a scheduler address (tcp://host:8786), or local:N for N local workers.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@guarded
def compress_main(input, output, ratio, count, target_psnr, target_size, best_effort, gamma, method, merge, merge_mode, finetune, net, iterations,
                  resolution, features, prune_schedule, cameras, images, quality, lod, lod_psnr, seed, sh_degree, strict, overwrite,
                  fmt, jobs, do_eval, scheduler, quiet, as_json):
    """Compress a 3DGS PLY (or a folder of scenes, local or an fsspec URL) into a .sundae bundle."""
    from . import storage

    if quiet or as_json:
        set_quiet(True)
    input = storage.normalize(input)
    output = None if output is None else storage.normalize(output)
    if not storage.exists(input):
        raise SundaeError(f"{input}: no such file or folder")
    ft_opts = {k: v for k, v in dict(iterations=iterations, resolution=resolution, features=features,
                                      prune_schedule=prune_schedule).items() if v is not None}
    if net is not None:
        ft_opts["net"] = net
    merge_arg = (merge_mode or "auto") if merge else None
    from .api import resolve_codec_settings

    resolve_codec_settings(quality)  # an unknown preset fails before any work
    from .api import check_target_options
    from .io.formats import resolve_format

    out_fmt = resolve_format(None if storage.isdir(input) else output, fmt)
    targets = {k: v for k, v in dict(target_psnr=target_psnr, target_size=target_size, lod=lod,
                                     lod_psnr=lod_psnr).items() if v is not None}
    if best_effort:
        targets["best_effort"] = True
    if lod is not None or lod_psnr is not None:  # conflicts and bad values fail before any work
        from .lod import check_options, parse_lod, parse_lod_psnr

        check_options(fmt=out_fmt, finetune_options=ft_opts, ratio=ratio, count=count, lod=lod, lod_psnr=lod_psnr,
                      target_psnr=target_psnr, target_size=target_size, best_effort=best_effort)
        parse_lod(lod) if lod_psnr is None else parse_lod_psnr(lod_psnr)
    else:
        check_target_options(ratio, count, target_psnr, target_size, out_fmt, best_effort)
    if storage.isdir(input):
        from .batch import run_batch

        if output is None:
            raise SundaeError("batch mode needs -o OUTDIR")
        batch = dict(ratio=ratio, count=count, gamma=gamma, method=method, merge=merge_arg, finetune=finetune,
                     finetune_options=ft_opts, sh_degree=sh_degree, strict=strict, overwrite=overwrite,
                     evaluate=do_eval, seed=seed, as_json=as_json, format=fmt, quality=quality, **targets)
        if scheduler is None:
            result = run_batch(input, output, jobs=jobs, **batch)
        else:
            if jobs != 1:
                raise SundaeError("--jobs is for one machine; with --scheduler the cluster's workers set the parallelism")
            from .batch import MEM_SHARE
            from .batch_dask import connect

            with connect(scheduler, memory_share=MEM_SHARE) as client:
                result = run_batch(input, output, client=client, **batch)
        sys.exit(0 if result.ok else EXIT_ERROR)
    if jobs != 1 or scheduler is not None:
        raise SundaeError("--jobs and --scheduler apply to batch mode (a folder as input)")
    if not isinstance(input, Path) or (output is not None and not isinstance(output, Path)):
        raise SundaeError("URLs are for batch mode (a folder of scenes); give a single scene as a local path")

    from .api import compress

    report = compress(input, output, ratio=ratio, count=count, gamma=gamma, method=method, merge=merge_arg,
                      finetune=finetune, sh_degree=sh_degree, strict=strict, overwrite=overwrite,
                      cameras=cameras, images=images, finetune_options=ft_opts, seed=seed, notify=info,
                      format=fmt, quality=quality, evaluate=True if do_eval else None, **targets)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.summary())
        if report.levels:
            from .lod import format_level_line

            for lv in report.levels:
                click.echo(format_level_line(lv))


# ----------------------------------------------------------------------------------------------
# sundae-inspect / sundae-decompress
# ----------------------------------------------------------------------------------------------
_LEVEL_HELP = ("Level of a level-of-detail ladder bundle (--lod): 0 = coarsest; default the finest "
               "(the command says which level it used; sundae-inspect lists them).")

@command
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@guarded
def inspect_main(bundle, as_json):
    """Report what a .sundae bundle holds: counts, bounds, bytes per section, net; for a
    level-of-detail ladder, every level with its count, bytes and measured novel-view PSNR."""
    from .io.bundle import inspect_bundle  # numpy + zstandard only: no torch for a size report

    d = inspect_bundle(bundle)
    click.echo(json.dumps(d, indent=2) if as_json else format_inspect(d))


def _fmt_bytes(b) -> str:
    if not isinstance(b, (int, float)):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.2f} {unit}"
        b /= 1024.0


def format_pipeline(p: dict) -> str:
    """The bundle's recorded pipeline in words, e.g. ``kept 9,019 Gaussians (ratio 0.1); spectral
    selection (gamma 0.5) + assign merge; fine-tuned 300 iterations at 224 px, net 10,339 params``."""
    count, ratio = p.get("count"), p.get("ratio")
    parts = [f"kept {count:,} Gaussians" if isinstance(count, int) else "kept ? Gaussians"]
    if ratio is not None:
        parts[0] += f" (ratio {ratio:g})"
    merge, method = p.get("merge"), p.get("method")
    if merge == "collapse":
        parts.append("pairwise edge-collapse merge (no selector)")
    else:
        sel = f"{method or '?'} selection" + (f" (gamma {p['gamma']:g})" if method == "spectral"
                                             and isinstance(p.get("gamma"), (int, float)) else "")
        parts.append(sel + (f" + {merge} merge" if merge else ", no merge"))
    ft = p.get("finetune")
    if not ft:
        parts.append("no fine-tuning")
    else:
        t = "fine-tuned"
        if ft.get("iterations") is not None:
            t += f" {ft['iterations']} iterations"
        res = ft.get("resolution")
        if isinstance(res, (list, tuple)) and len(res) == 2:
            t += f" at {res[0]}x{res[1]} px"
        elif res is not None:
            t += f" at {res} px"
        if ft.get("test_psnr_end") is not None:  # the trainer's own check views, not the eval views
            t += (f", {ft.get('test_views') or 'trainer check views'} PSNR {ft.get('test_psnr_start', 0):.2f} "
                  f"-> {ft['test_psnr_end']:.2f} dB")
        if ft.get("net_params"):
            t += f", net {ft['net_params']:,} params"
        parts.append(t)
    tgt = p.get("target")
    if isinstance(tgt, dict):
        parts.append(format_target(tgt))
    return "; ".join(parts)


def format_target(t: dict) -> str:
    """``--target-psnr`` / ``--target-size`` as recorded in a bundle, e.g. ``target 35 dB novel-view
    PSNR: achieved 35.41 dB (worst view 30.12)``."""
    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"

    if t.get("kind") == "size":
        asked = f"target size {num(t.get('requested'), ',')} bytes"
    else:
        asked = f"target {num(t.get('requested'), 'g')} dB novel-view PSNR"
    line = f"{asked}: achieved {num(t.get('novel_psnr'), '.2f')} dB (worst view {num(t.get('worst_psnr'), '.2f')})"
    if t.get("kind") != "size" and t.get("reached") is False:
        line += ", NOT reached (written with --best-effort)"
    return line


def format_levels(levels) -> list:
    """The level table of a ladder bundle (``sundae-inspect``): count, own bytes, the prefix of the
    file that decodes the level, codec preset and the novel-view PSNR measured when it was written."""
    lines = [f"  {'level':<7}{'Gaussians':>11}{'bytes':>12}{'prefix':>12}{'bits/G':>9}  {'quality':<8}"
             f"{'novel PSNR':>11}{'worst':>8}  ratio"]
    for lv in levels:
        fid = lv.get("fidelity") or {}
        p = lv.get("pipeline") or {}
        novel = f"{fid['novel_psnr']:.2f} dB" if isinstance(fid.get("novel_psnr"), (int, float)) else "-"
        worst = f"{fid['worst_psnr']:.2f}" if isinstance(fid.get("worst_psnr"), (int, float)) else "-"
        ratio = f"{p['ratio']:.4g}" if isinstance(p.get("ratio"), (int, float)) else "?"
        base = f" (+ level {lv['base']})" if lv.get("base") is not None else ""
        tgt = p.get("target") if isinstance(p.get("target"), dict) else None
        if tgt and isinstance(tgt.get("requested"), (int, float)):
            base += f"  target {tgt['requested']:g} dB" + (" NOT reached" if tgt.get("reached") is False else "")
        lines.append(f"  {lv['level']:<7}{lv['count']:>11,}{lv['bytes']:>12,}{lv['prefix_bytes']:>12,}"
                     f"{(lv.get('bits_per_gaussian') or 0):>9.2f}  {str(p.get('quality') or '-'):<8}"
                     f"{novel:>11}{worst:>8}  {ratio}{base}")
    lines.append("  (level 0 = coarsest; a reader decodes level k from the first 'prefix' bytes of the file; "
                 "--level k in render / decompress / eval)")
    return lines


def format_inspect(d: dict) -> str:
    """Human-readable table of :func:`~sundae_compress.io.bundle.inspect_bundle`'s dict."""
    lines = [f"{d['path']}  (.sundae v{d['format_version']}, {d.get('created_by') or '?'})",
             f"  Gaussians      {d['count']:,}   SH degree {d['sh_degree']}   features {d['num_features']}",
             f"  file size      {d['file_bytes']:,} bytes ({_fmt_bytes(d['file_bytes'])}), "
             f"{d['bits_per_gaussian']} bits/Gaussian"]
    b = d.get("bounds") or {}
    if b:
        def fmt(v):
            return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"

        lines.append(f"  bounds         {fmt(b['min'])} .. {fmt(b['max'])}")
    src = d.get("source")
    if src:
        nbytes = f"{src['bytes']:,} bytes" if isinstance(src.get("bytes"), int) else "? bytes"
        count = f"{src['count']:,}" if isinstance(src.get("count"), int) else "?"
        valid = f"{src['valid']:,}" if isinstance(src.get("valid"), int) else "?"
        lines.append(f"  source         {src.get('file') or '?'}: {nbytes}, {count} Gaussians ({valid} valid)"
                     + (f", ratio {src['compression_ratio']}x" if "compression_ratio" in src else ""))
    if d.get("levels"):
        lines.append("")
        lines.extend(format_levels(d["levels"]))
    lines.append("")
    lines.append(f"  {'section':<12}{'bytes':>12}{'raw':>12}{'share':>8}{'bits/G':>9}  codec")
    lines.append(f"  {'header':<12}{d['header_bytes']:>12,}{'':>12}{d['header_bytes'] / d['file_bytes']:>8.1%}"
                 f"{8 * d['header_bytes'] / max(d['count'], 1):>9.2f}")
    for s in d["sections"]:
        lines.append(f"  {s['name']:<12}{s['bytes']:>12,}{s['raw_bytes']:>12,}{s['share']:>8.1%}"
                     f"{(s['bits_per_gaussian'] or 0):>9.2f}  {s['codec']}")
    st = d["settings"]
    lines.append("")
    if d.get("levels"):
        finest = d["levels"][-1].get("pipeline")
        preset = finest.get("quality") if isinstance(finest, dict) else None
        lines.append(f"  (finest level{f', {preset} preset' if isinstance(preset, str) else ''}; "
                     f"sundae-inspect --json lists every level's settings)")
    lines.append("  quantisation   positions {position_bits} b/axis, rotations {rotation_bits} b x3 (smallest-three), "
                 "scales {scale_bits} b {scale_mode}, opacity {opacity_bits} b {opacity_mode}, ".format(**st)
                 + (f"colour step {st['color_step']:g}" if st.get("color_mode") == "step"  # v4 default
                    else "colour {color_bits} b {color_mode}".format(**st)))
    more = []
    if d["sh_degree"] > 0:  # degree 0 has no SH rest to quantise
        cb = d.get("sh_codebook_entries")
        if st.get("sh_mode", "vq") == "scalar":  # v2 default: per-band steps
            more.append(f"SH rest per band, steps {st['sh_step1']:g}/{st['sh_step2']:g}/{st['sh_step3']:g}")
        else:
            more.append(f"SH rest codebook {cb if cb is not None else '-'} x {st['sh_codebook_bits']} b")
    if d["num_features"]:
        more.append(f"features {st['feature_bits']} b")
    more.append(f"zstd level {st['zstd_level']}")
    lines.append("                 " + ", ".join(more))
    net = d["net"]
    if net["present"]:
        meta = net.get("meta") or {}
        extra = ", ".join(f"{k.replace('_', ' ')} {meta[k]}" for k in ("arch", "width", "levels", "num_features",
                                                                        "dtype") if meta.get(k) is not None)
        params = f"{net['params']:,}" if isinstance(net.get("params"), int) else "?"
        lines.append(f"  net            {net['bytes']:,} bytes ONNX ({net['stored_bytes']:,} stored), {params} params"
                     + (f"; {extra}" if extra else ""))
    else:
        lines.append("  net            none")
    if d.get("levels"):
        top = d.get("pipeline") or {}
        asked = (f"--lod-psnr {','.join(format(x, 'g') for x in top['lod_psnr'])}"
                 if isinstance(top.get("lod_psnr"), list) and all(isinstance(x, (int, float)) for x in top["lod_psnr"])
                 else "--lod " + ",".join(format((lv.get("pipeline") or {}).get("ratio", 0), "g") for lv in d["levels"]))
        lines.append(f"  pipeline       {len(d['levels'])} independent levels ({asked}); "
                     f"finest: " + format_pipeline(d["levels"][-1].get("pipeline") or {}))
    elif d.get("pipeline"):
        lines.append("  pipeline       " + format_pipeline(d["pipeline"]))
    return "\n".join(lines)


@command
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output .ply / .compressed.ply / .spz / .sog (default BUNDLE.decoded.ply).")
@click.option("--format", "fmt", type=click.Choice(["ply", "compressed-ply", "spz", "sog"]), default=None,
              help="Output format (default: from the -o extension, else ply).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output file (but never the bundle's recorded source scene).")
@click.option("--overwrite-source", is_flag=True,
              help="Also allow replacing the scene this bundle was made from (its name or size is recorded "
                   "in the bundle) with the decoded, smaller scene.")
@click.option("--level", type=int, default=None, help=_LEVEL_HELP)
@guarded
def decompress_main(bundle, output, fmt, overwrite, overwrite_source, level):
    """Decode a .sundae bundle into a standard 3DGS PLY (default BUNDLE.decoded.ply), or a compressed
    PLY, .spz or .sog."""
    from .api import decompress, default_decoded_path
    from .io.formats import resolve_format

    output = output or default_decoded_path(bundle, resolve_format(None, fmt or "ply"))
    gs = decompress(bundle, output, overwrite=overwrite or overwrite_source, overwrite_source=overwrite_source,
                    format=fmt, notify=info, level=level)
    click.echo(f"{bundle.name}: {len(gs):,} Gaussians → {output}")


# ----------------------------------------------------------------------------------------------
# sundae-render / sundae-eval
# ----------------------------------------------------------------------------------------------
_CAMERAS_HELP = ("cameras.json / transforms.json, or 'orbit' for generated views (default: a camera file next "
                 "to the scene, else orbit views).")


@command
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder for the PNGs.")
@click.option("--cameras", help=_CAMERAS_HELP)
@click.option("--views", type=click.IntRange(1, 1000), default=None,
              help="Number of views (default: 8 generated, or all of the camera file).")
@click.option("--size", default=None, help="Image size WxH (default 320x240, or the camera file's).")
@click.option("--up", default=None, help="Up axis for generated views, e.g. +z or -y (default: detected).")
@click.option("--level", type=int, default=None, help=_LEVEL_HELP)
@click.option("--quiet", is_flag=True, help="No progress output.")
@guarded
def render_main(input, output, cameras, views, size, up, level, quiet):
    """Render a PLY or .sundae to PNGs plus a contact sheet."""
    if quiet:
        set_quiet(True)
    from .api import check_image_folder, choose_views, level_note, load_for_render

    size = _parse_size(size)
    check_image_folder(output)  # a bad -o fails now, not after rendering
    gs, post = load_for_render(input, level=level)
    if level_note(gs, input):
        info(level_note(gs, input))
    chosen = choose_views(gs, input, cameras=cameras, views=views, size=size, up=up)
    check_image_folder(output, create=True)
    info(chosen.source)
    from .evaluate import render_to_dir

    paths = render_to_dir(gs, chosen.cameras, output, postprocess=post)  # one PNG per view, then the sheet
    n = len(paths)
    click.echo(f"{input.name}: {n} view{'s' if n != 1 else ''} → {output}: {n} PNG{'s' if n != 1 else ''} "
               f"+ contact_sheet.png ({n + 1} files)")


@command
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--cameras", help=_CAMERAS_HELP)
@click.option("--views", type=click.IntRange(1, 1000), default=None,
              help="Number of near views (default: 8 generated, or the camera file's held-out views); "
                   "the 12 novel views are fixed.")
@click.option("--size", default=None, help="Image size WxH (default 320x240, or the camera file's).")
@click.option("--up", default=None, help="Up axis for generated views.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write a side-by-side PNG (original | candidate | error) here, one row for each of the "
                   "4 worst novel views (default: none).")
@click.option("--json", "as_json", is_flag=True, help="Print only the machine-readable result (per-view and mean "
                                                        "PSNR / SSIM) as JSON.")
@click.option("--level", type=int, default=None, help="Level of the CANDIDATE when it is a ladder bundle (--lod): "
                                                     "0 = coarsest; default the finest (said on stderr and in --json).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@guarded
def eval_main(original, candidate, cameras, views, size, up, output, as_json, level, quiet):
    """Compare a candidate (.ply or .sundae) with the original: PSNR / SSIM on views near the
    training distribution (held-out views of a camera file, or generated), on novel views the
    trainer never samples, and the worst single novel view."""
    if quiet or as_json:
        set_quiet(True)
    from .api import evaluate_output, evaluation_views, load_for_render, source_warning

    size = _parse_size(size)
    if output is not None and output.is_dir():
        raise SundaeError(f"{output} is a folder; -o takes the name of the PNG to write")
    orig, _ = load_for_render(original)
    warning = source_warning(original, orig, candidate)
    if warning:
        click.echo(f"warning: {warning}", err=True)  # shown even with --quiet / --json: not progress
    # --cameras picks the views to score; the novel views stay those of the scene's own frame
    ev = evaluation_views(orig, original, cameras=cameras, views=views, size=size, up=up, scene_frame=True)
    near, novel, source = ev
    info(source)
    sets = {"near": near, "novel": novel}
    result = evaluate_output(orig, candidate, near, novel, side_by_side_path=output, labels=ev.labels,
                             level=level)
    result["cameras"] = source
    result["warnings"] = [warning] if warning else []
    if result.get("level_note"):
        info(result["level_note"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for name in sets:
            r = result[name]
            click.echo(f"{name:>5}: PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}  on {r['label']}; "
                       f"worst {r['worst']['psnr']:.2f} dB {r['worst']['name']} - {r['note']}")
        w = result["worst"]
        click.echo(f"worst novel view: {w['name']}  PSNR {w['psnr']:.2f} dB  SSIM {w['ssim']:.4f}")
        rows = result.get("side_by_side_rows")
        if output is not None and rows:
            what = rows[0]["set"]
            click.echo(f"side-by-side: {output}, {len(rows)} rows = the {len(rows)} worst of the "
                       f"{result[what]['n_views']} {what} views, worst first (--views sets only the near views)")
