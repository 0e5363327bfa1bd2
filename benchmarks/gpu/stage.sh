#!/bin/bash
# Prepare an offline CUDA machine's run of benchmarks/gpu/device_run.sh (issue 17).
#
#   benchmarks/gpu/stage.sh [CHECKOUT]        # default: this repository's root
#   benchmarks/gpu/stage.sh --clean [CHECKOUT]
#
# Fills CHECKOUT/.gpu (ignored through .git/info/exclude) and CHECKOUT/.whl (in .gitignore) with what
# a machine that cannot reach a package index needs, without committing any of it:
#   .gpu/src          this repository's HEAD (git archive), so uncommitted files are not sent
#   .gpu/shared       ../shared/assets/*.ply and ../shared/tools/refrender.py (tests and benchmarks
#                     look for them beside the source: .gpu/src/../shared)
#   .gpu/pyinc        CPython 3.12 headers, used there only when its python3 has none (gsplat's JIT
#                     build and setup.py need Python.h)
#   .gpu/device_run.sh
#   .whl              wheels for Python 3.12 / manylinux x86-64: gsplat (pure Python; compiles its
#                     CUDA code on first use), plyfile, zstandard
# Then copy CHECKOUT (tracked files + .gpu + .whl) to the GPU machine and, from its root, run
#   bash .gpu/device_run.sh 2>&1 | tee $OUT/run.log
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
CLEAN=0
if [ "${1:-}" = "--clean" ]; then CLEAN=1; shift; fi
DEST=$(cd "${1:-$HERE}" && pwd)
EXCL=$(git -C "$DEST" rev-parse --git-common-dir)/info/exclude
case "$EXCL" in /*) ;; *) EXCL=$DEST/$EXCL ;; esac
if [ $CLEAN = 1 ]; then
  rm -rf "$DEST/.gpu"
  rm -f "$DEST"/.whl/gsplat-*.whl "$DEST"/.whl/plyfile-*.whl "$DEST"/.whl/zstandard-*.whl
  rmdir "$DEST/.whl" 2>/dev/null || true
  [ -f "$EXCL" ] && sed -i '\#^/\.gpu/$#d' "$EXCL"
  echo "removed $DEST/.gpu and the staged wheels"; exit 0
fi
SHARED=$HERE/../shared
[ -f "$SHARED/assets/donut.ply" ] || { echo "error: $SHARED/assets not found" >&2; exit 1; }
mkdir -p "$(dirname "$EXCL")"; touch "$EXCL"
grep -qx '/.gpu/' "$EXCL" || echo '/.gpu/' >>"$EXCL"
rm -rf "$DEST/.gpu"; mkdir -p "$DEST/.gpu/src" "$DEST/.gpu/shared/assets" "$DEST/.gpu/shared/tools" "$DEST/.gpu/pyinc" "$DEST/.whl"
git -C "$HERE" archive HEAD | tar -x -C "$DEST/.gpu/src"
cp "$SHARED"/assets/*.ply "$DEST/.gpu/shared/assets/"
cp "$SHARED/tools/refrender.py" "$DEST/.gpu/shared/tools/" 2>/dev/null || true
cp "$HERE/benchmarks/gpu/device_run.sh" "$DEST/.gpu/"
PY312=
for p in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
  if "$p" -c "import sys; assert sys.version_info[:2] == (3, 12)" >/dev/null 2>&1; then PY312=$p; break; fi
done
INC=${PY312:+$("$PY312" -c "import sysconfig; print(sysconfig.get_paths()['include'])")}
if [ -n "$INC" ] && [ -f "$INC/Python.h" ]; then cp -r "$INC" "$DEST/.gpu/pyinc/python3.12"
else echo "note: no CPython 3.12 headers found here; the GPU machine must have its own"; fi
"${PY312:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST/.whl" \
  gsplat==1.5.3 plyfile==1.1.5 zstandard==0.25.0
du -sh "$DEST/.gpu" "$DEST/.whl"
echo "staged in $DEST: .gpu (ignored) and .whl; carry both; remove with: $0 --clean $DEST"
