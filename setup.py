"""Build of the native kernels (everything else is in pyproject.toml).

``sundae_compress.prune._kernel`` is a C extension: the grid kNN / spectral-score kernel and the
merge helpers (``sundae_compress/prune/csrc/*.c``), loaded with ctypes by
``sundae_compress/prune/native.py``. ``sundae_compress.render._raster`` is the tile rasteriser of
the CPU renderer (``sundae_compress/render/csrc/*.c``), loaded with ctypes by
``sundae_compress/render/native.py`` (both through the shared loader ``sundae_compress/_native.py``).
They need a C compiler and the Python headers; without them
the install stops with a message that says what to install.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "sundae_compress/prune/csrc"
RSRC = "sundae_compress/render/csrc"

HELP = (
    "sundae-compress: building the native kernel ({what}) failed. It needs a C compiler and the "
    "Python development headers: on Debian/Ubuntu `apt-get install build-essential python3-dev` "
    "(or the python3.X-dev matching your interpreter), on Fedora `dnf install gcc python3-devel`, "
    "on macOS `xcode-select --install`; then rerun `pip install -e .`."
)


class BuildKernel(build_ext):
    """build_ext whose failure is one clear message instead of a compiler traceback."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # distutils' CompileError / PlatformError / CCompilerError ...
            raise SystemExit(HELP.format(what=f"{type(e).__name__}: {e}")) from e

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            raise SystemExit(HELP.format(what=f"{type(e).__name__}: {e}")) from e


kernel = Extension(
    "sundae_compress.prune._kernel",
    sources=[f"{CSRC}/module.c", f"{CSRC}/knn.c", f"{CSRC}/merge.c"],
    depends=[f"{CSRC}/radix.h"],
    # -fno-math-errno / -fno-trapping-math let gcc vectorise the float selects and square roots
    # (no effect on results); -fno-wrapv undoes CPython's -fwrapv (the kernel has no signed
    # overflow, and wrapping semantics block loop optimisations); C99 for loop declarations.
    extra_compile_args=["-O3", "-std=c99", "-fno-math-errno", "-fno-trapping-math", "-fno-wrapv"],
    libraries=["m"],
)

raster = Extension(
    "sundae_compress.render._raster",
    sources=[f"{RSRC}/module.c", f"{RSRC}/raster.c"],
    # as above, plus -ffp-contract=off: alpha must round exactly like the torch path's float32
    # arithmetic (no fused multiply-adds).
    extra_compile_args=["-O3", "-std=c99", "-fno-math-errno", "-fno-trapping-math", "-fno-wrapv",
                        "-ffp-contract=off"],
    libraries=["m"],
)

setup(ext_modules=[kernel, raster], cmdclass={"build_ext": BuildKernel})
