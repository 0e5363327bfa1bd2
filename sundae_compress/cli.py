"""Command line: a thin layer over :mod:`sundae_compress.api`.

Every command turns our own errors (bad input, impossible options) into one line on stderr,
``error: <message>``, and exit code 1; Ctrl-C exits 130. Nothing prints a traceback unless
``SUNDAE_DEBUG=1`` is set.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from .errors import SundaeError
from .progress import set_quiet

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int = EXIT_ERROR):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output .sundae (default IN.sundae), or a folder for batch input.")
@click.option("--ratio", type=float, help="Share of the valid Gaussians to keep, 0 < r <= 1 (default 0.1).")
@click.option("--count", type=int, help="Exact number of Gaussians to keep (instead of --ratio).")
@click.option("--gamma", type=float, default=0.5, show_default=True, help="Band-stop share taken from the high-frequency end.")
@click.option("--method", type=click.Choice(_method_choices()), default="spectral", show_default=True)
@click.option("--merge/--no-merge", default=True, show_default=True, help="Fold removed Gaussians into the survivors.")
@click.option("--merge-mode", type=click.Choice(["assign", "collapse"]), default=None, help="Merge algorithm (default: the best measured).")
@click.option("--finetune/--no-finetune", default=True, show_default=True, help="Distil the original into the pruned scene + compensation net.")
@click.option("--net/--no-net", default=True, show_default=True, help="Train and ship the compensation U-Net (with fine-tuning).")
@click.option("--iterations", type=int, help="Fine-tuning iterations (default depends on CPU/GPU).")
@click.option("--resolution", type=int, help="Long side of the fine-tuning renders in pixels.")
@click.option("--features", type=int, default=None, help="Extra learned feature channels per Gaussian for the net.")
@click.option("--prune-schedule", default=None, help="Continuous pruning during fine-tuning, e.g. every=50,share=0.3.")
@click.option("--cameras", type=click.Path(path_type=Path), help="cameras.json / transforms.json for fine-tuning views.")
@click.option("--images", type=click.Path(path_type=Path), help="Folder of training photos matching --cameras (instead of distillation).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sh-degree", type=click.IntRange(0, 3), help="Drop SH bands above this degree.")
@click.option("--strict", is_flag=True, help="Refuse rows with NaN/Inf instead of dropping them.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Batch mode: scenes in parallel.")
@click.option("--eval", "do_eval", is_flag=True, help="Batch mode: report held-out PSNR per scene.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@guarded
def compress_main(input, output, ratio, count, gamma, method, merge, merge_mode, finetune, net, iterations,
                  resolution, features, prune_schedule, cameras, images, seed, sh_degree, strict, overwrite,
                  jobs, do_eval, quiet, as_json):
    """Compress a 3DGS PLY (or a folder of scenes) into a .sundae bundle."""
    if quiet or as_json:
        set_quiet(True)
    if not input.exists():
        raise SundaeError(f"{input}: no such file or folder")
    ft_opts = {k: v for k, v in dict(iterations=iterations, resolution=resolution, features=features,
                                      prune_schedule=prune_schedule).items() if v is not None}
    if not net:
        ft_opts["net"] = False
    merge_arg = (merge_mode or "auto") if merge else None
    if input.is_dir():
        from .batch import run_batch

        if output is None:
            raise SundaeError("batch mode needs -o OUTDIR")
        result = run_batch(input, output, ratio=ratio, count=count, gamma=gamma, method=method, merge=merge_arg,
                           finetune=finetune, finetune_options=ft_opts, sh_degree=sh_degree, strict=strict,
                           overwrite=overwrite, jobs=jobs, evaluate=do_eval, seed=seed, as_json=as_json)
        sys.exit(0 if result.ok else EXIT_ERROR)
    if jobs != 1 or do_eval:
        raise SundaeError("--jobs and --eval apply to batch mode (a folder as input)")

    from .api import compress

    cams = None
    if cameras is not None:
        from .render.cameras import load_cameras

        cams = load_cameras(cameras)
    imgs = None
    if images is not None:
        if cams is None:
            raise SundaeError("--images needs --cameras describing those photos")
        from .render.cameras import load_images

        imgs = load_images(images, cams)
    report = compress(input, output, ratio=ratio, count=count, gamma=gamma, method=method, merge=merge_arg,
                      finetune=finetune, sh_degree=sh_degree, strict=strict, overwrite=overwrite,
                      cameras=cams, images=imgs, finetune_options=ft_opts, seed=seed)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.summary())


# ----------------------------------------------------------------------------------------------
# sundae-inspect / sundae-decompress
# ----------------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@guarded
def inspect_main(bundle, as_json):
    """Report what a .sundae bundle holds: counts, bounds, bytes per section, net."""
    from .io.bundle import format_inspect, inspect_bundle

    d = inspect_bundle(bundle)
    click.echo(json.dumps(d, indent=2) if as_json else format_inspect(d))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output PLY (default BUNDLE.ply).")
@click.option("--overwrite", is_flag=True)
@guarded
def decompress_main(bundle, output, overwrite):
    """Decode a .sundae bundle into a standard 3DGS PLY."""
    from .api import decompress

    output = output or bundle.with_suffix(".ply")
    gs = decompress(bundle, output, overwrite=overwrite)
    click.echo(f"{bundle.name}: {len(gs):,} Gaussians → {output}")


# ----------------------------------------------------------------------------------------------
# sundae-render / sundae-eval
# ----------------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder for the PNGs.")
@click.option("--cameras", type=click.Path(path_type=Path), help="cameras.json / transforms.json.")
@click.option("--views", type=click.IntRange(1, 1000), default=None, help="Number of views (default 8 generated).")
@click.option("--size", default=None, help="Image size WxH (default 320x240).")
@click.option("--up", default=None, help="Up axis for generated views, e.g. +z or -y (default: detected).")
@click.option("--quiet", is_flag=True)
@guarded
def render_main(input, output, cameras, views, size, up, quiet):
    """Render a PLY or .sundae to PNGs plus a contact sheet."""
    if quiet:
        set_quiet(True)
    from .evaluate import render_to_dir

    from .api import load_for_render

    gs, post = load_for_render(input)
    from .render.cameras import views_for

    cams = views_for(gs, input, cameras=cameras, views=views, size=_parse_size(size), up=up)
    paths = render_to_dir(gs, cams, output, postprocess=post)
    click.echo(f"{input.name}: {len(cams)} views → {output} ({len(paths)} files)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--cameras", type=click.Path(path_type=Path), help="cameras.json / transforms.json.")
@click.option("--views", type=click.IntRange(1, 1000), default=None, help="Number of generated views (default 8).")
@click.option("--size", default=None, help="Image size WxH (default 320x240).")
@click.option("--up", default=None, help="Up axis for generated views.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Side-by-side PNG (default CANDIDATE.eval.png).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", is_flag=True)
@guarded
def eval_main(original, candidate, cameras, views, size, up, output, as_json, quiet):
    """Compare a candidate (.ply or .sundae) with the original on held-out views: PSNR, SSIM."""
    if quiet or as_json:
        set_quiet(True)
    from .evaluate import evaluate_and_report

    from .api import load_for_render

    orig, _ = load_for_render(original)
    cand, post = load_for_render(candidate)
    from .render.cameras import views_for

    cams = views_for(orig, original, cameras=cameras, views=views, size=_parse_size(size), up=up, held_out=True)
    output = output or candidate.with_name(candidate.name + ".eval.png")
    result = evaluate_and_report(orig, cand, cams, postprocess=post, side_by_side_path=output)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for v in result["views"]:
            click.echo(f"{v['name']:>12}  PSNR {v['psnr']:6.2f} dB  SSIM {v['ssim']:.4f}")
        click.echo(f"{'mean':>12}  PSNR {result['psnr']:6.2f} dB  SSIM {result['ssim']:.4f}  "
                   f"LPIPS {result.get('lpips') or 'unavailable'}")
        click.echo(f"side-by-side: {output}")
