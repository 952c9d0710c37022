#!/usr/bin/env bash
# The native DSP backend's NEON build, loaded by edge.dsp.native in an aarch64 CPython under qemu-user,
# against the numpy reference: every kernel, with the tolerances of tests/test_backends.py
# (scripts/aarch64_python_check.py does the comparison and prints one row per kernel and input).
#
#   bash scripts/aarch64_python_check.sh            exit 0: every kernel matches; 1: a mismatch;
#                                                   77: skipped (no toolchain, qemu or registries)
#   bash scripts/aarch64_python_check.sh --refresh  fetch and unpack the sysroot again
#
# Needs gcc-aarch64-linux-gnu, qemu-user-static (or qemu-user), apt-get and dpkg-deb (a Debian-family
# host) and pip. Installs nothing into the system: the arm64 Python and its libraries are fetched with
# apt-get download (a private apt state of its own, arch arm64, from this host's apt sources; nothing is
# installed and dpkg's architectures stay as they are) and unpacked with dpkg-deb -x; numpy and scipy are
# PyPI's manylinux aarch64 wheels of the versions the host Python has. Everything lives in a cache,
# re-used when present (network only on the first run):
#   ${TYMPAN_CACHE_DIR:-~/.cache/tympan}/aarch64-sysroot   (TYMPAN_AARCH64_SYSROOT overrides)
# Other knobs: PYTHON (the host Python whose numpy/scipy versions and pip are used; default .venv/bin/python),
# TYMPAN_AARCH64_SOURCES (an apt sources file to use instead of the host's, e.g. where arm64 lives on
# another mirror, as Ubuntu's ports). Arguments after -- go to the Python check (e.g. -- --noise-floor 0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TYMPAN_AARCH64_SYSROOT:-${TYMPAN_CACHE_DIR:-$HOME/.cache/tympan}/aarch64-sysroot}"
refresh=0
check_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --refresh) refresh=1 ;;
    --) shift; check_args=("$@"); break ;;
    *) echo "usage: bash scripts/aarch64_python_check.sh [--refresh] [-- check options]" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'aarch64-check: %s\n' "$*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
t_start=$SECONDS

# --- tools --------------------------------------------------------------------------------------------
GCC="$(command -v aarch64-linux-gnu-gcc || true)"
QEMU="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[ -n "$GCC" ] || skip "no aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)"
[ -n "$QEMU" ] || skip "no qemu-aarch64-static or qemu-aarch64 (apt-get install qemu-user-static)"
command -v apt-get > /dev/null && command -v apt-cache > /dev/null && command -v dpkg-deb > /dev/null \
  || skip "needs apt-get and dpkg-deb (a Debian-family host) to fetch the arm64 Python"
HOST_PY="${PYTHON:-}"
if [ -z "$HOST_PY" ]; then
  HOST_PY="$ROOT/.venv/bin/python"
  [ -x "$HOST_PY" ] || HOST_PY="$(command -v python3 || true)"
fi
[ -n "$HOST_PY" ] || skip "no host Python (set PYTHON)"
read -r PYVER NUMPY_V SCIPY_V < <("$HOST_PY" - << 'EOF' || true
import importlib.metadata as m, sys
try:
    print(f"{sys.version_info[0]}.{sys.version_info[1]}", m.version("numpy"), m.version("scipy"))
except m.PackageNotFoundError as e:
    print("none none none", e)
EOF
)
[ -n "${SCIPY_V:-}" ] && [ "$NUMPY_V" != none ] || skip "$HOST_PY has no numpy and scipy (bash scripts/setup.sh test)"
PYTAG="${PYVER/./}"
EXT_SUFFIX=".cpython-${PYTAG}-aarch64-linux-gnu.so"  # what edge.dsp.native looks for on aarch64

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
if command -v flock > /dev/null; then exec 9> "$CACHE/.lock"; flock 9; fi  # one run at a time per cache

SYSROOT="$CACHE/root-py$PYVER"
SITE="$CACHE/site-py$PYVER-numpy$NUMPY_V-scipy$SCIPY_V"
if [ "$refresh" = 1 ]; then rm -rf "$SYSROOT" "$SITE" "$CACHE/debs" "$CACHE/wheels" "$CACHE/apt"; fi

# --- 1. the arm64 Python from Debian packages ---------------------------------------------------------
APT_OPTS=(-o "Dir::State=$CACHE/apt/state" -o "Dir::State::status=$CACHE/apt/status"
  -o "Dir::Cache=$CACHE/apt/cache" -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
  -o "APT::Sandbox::User=$(id -un)")
if [ -n "${TYMPAN_AARCH64_SOURCES:-}" ]; then
  APT_OPTS+=(-o "Dir::Etc::sourcelist=$TYMPAN_AARCH64_SOURCES" -o "Dir::Etc::sourceparts=-")
fi
if [ ! -f "$SYSROOT/.complete" ]; then
  say "fetching the arm64 Python $PYVER (Debian packages; first run only)"
  mkdir -p "$CACHE/apt/state/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/debs"
  : > "$CACHE/apt/status"
  apt-get -qq "${APT_OPTS[@]}" update > "$CACHE/apt.log" 2>&1 \
    || skip "apt-get update (arch arm64) failed: the package registry is unreachable or has no arm64" \
      "(see $CACHE/apt.log)"
  # python, its direct dependencies but the MIME table (libraries: zlib, libffi, libssl, ...) and the C++
  # runtime that numpy's wheels need
  py=("python$PYVER-minimal" "libpython$PYVER-minimal" "libpython$PYVER-stdlib")
  deps="$(apt-cache "${APT_OPTS[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${py[@]}" 2> /dev/null | awk '/^ *(Pre)?Depends:/ && $2 !~ /^</ {print $2}' \
    | grep -Ev '^(media-types|mime-support|mailcap|tzdata)$' || true)"
  [ -n "$deps" ] || skip "no arm64 python$PYVER from the apt sources: registry unreachable or without arm64" \
    "(see $CACHE/apt.log; TYMPAN_AARCH64_SOURCES)"
  mapfile -t pkgs < <(printf '%s\n' "${py[@]}" $deps libgcc-s1 libstdc++6 | sort -u)
  rm -f "$CACHE"/debs/*.deb
  (cd "$CACHE/debs" && apt-get -qq "${APT_OPTS[@]}" download "${pkgs[@]}" >> "$CACHE/apt.log" 2>&1) \
    || skip "apt-get download of ${pkgs[*]} (arm64) failed (see $CACHE/apt.log)"
  rm -rf "$SYSROOT.tmp" && mkdir -p "$SYSROOT.tmp"
  for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$SYSROOT.tmp"; done
  [ -x "$SYSROOT.tmp/usr/bin/python$PYVER" ] || { say "no usr/bin/python$PYVER in the packages"; exit 1; }
  (cd "$CACHE/debs" && for deb in *.deb; do
    printf '%-28s %-26s %8s KiB  debian\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
      "$(( $(stat -c %s "$deb") / 1024 ))"
  done) > "$SYSROOT.tmp/.packages"
  touch "$SYSROOT.tmp/.complete"
  rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
fi
PYBIN="$SYSROOT/usr/bin/python$PYVER"

# --- 2. numpy and scipy: PyPI's manylinux aarch64 wheels of the host's versions --------------------------
if [ ! -f "$SITE/.complete" ]; then
  say "fetching numpy $NUMPY_V and scipy $SCIPY_V for aarch64 (PyPI wheels; first run only)"
  glibc="$(dpkg-deb -f "$CACHE"/debs/libc6_*.deb Version 2> /dev/null | sed -E 's/^2\.([0-9]+).*/\1/')"
  plats=(--platform manylinux2014_aarch64)
  for m in $(seq 17 "${glibc:-36}"); do plats+=(--platform "manylinux_2_${m}_aarch64"); done
  rm -rf "$CACHE/wheels" && mkdir -p "$CACHE/wheels"
  "$HOST_PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --abi "cp$PYTAG" "${plats[@]}" -d "$CACHE/wheels" "numpy==$NUMPY_V" "scipy==$SCIPY_V" > "$CACHE/pip.log" 2>&1 \
    || skip "pip download of the aarch64 numpy $NUMPY_V / scipy $SCIPY_V wheels failed (see $CACHE/pip.log)"
  rm -rf "$SITE.tmp" && mkdir -p "$SITE.tmp"
  for whl in "$CACHE"/wheels/*.whl; do
    "$HOST_PY" -m zipfile -e "$whl" "$SITE.tmp"
    printf '%-28s %-26s %8s KiB  pypi\n' "$(basename "$whl" | cut -d- -f1)" "$(basename "$whl" | cut -d- -f2)" \
      "$(( $(stat -c %s "$whl") / 1024 ))" >> "$SITE.tmp/.packages"
  done
  touch "$SITE.tmp/.complete"
  rm -rf "$SITE" && mv "$SITE.tmp" "$SITE"
  say "fetched (package, version, size):"
  cat "$SYSROOT/.packages" "$SITE/.packages" >&2
fi

# --- 3. the NEON build, as the loader would compile it on an aarch64 machine ------------------------------
mapfile -t FLAGS < <(cd "$ROOT" && "$HOST_PY" -c \
  'from edge.dsp import native; print("\n".join((*native.BASE_FLAGS, *native.VARIANT_FLAGS["neon"])))')
[ ${#FLAGS[@]} -gt 0 ] || { say "could not read the build flags from edge.dsp.native"; exit 1; }
SRC="$ROOT/edge/dsp/native/tympan_dsp.c"
key="$( { cat "$SRC"; echo "${FLAGS[*]}"; "$GCC" --version | head -1; } | sha256sum | cut -c1-16)"
LIB="$CACHE/build/$key/_tympan_dsp$EXT_SUFFIX"
if [ ! -f "$LIB" ]; then
  say "compiling the NEON build: aarch64-linux-gnu-gcc ${FLAGS[*]} tympan_dsp.c -lm"
  mkdir -p "$(dirname "$LIB")"
  "$GCC" "${FLAGS[@]}" "$SRC" -o "$LIB.tmp" -lm && mv "$LIB.tmp" "$LIB"
fi

# --- 4. a copy of the project's packages with that build in place, run under qemu ------------------------
WORK="$CACHE/work"
rm -rf "$WORK" && mkdir -p "$WORK"
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.so' -cf - edge boards | tar -C "$WORK" -xf -
cp "$LIB" "$WORK/edge/dsp/native/"
say "running the check in python$PYVER (aarch64) under $(basename "$QEMU") ($((SECONDS - t_start)) s so far)"
set +e
env -u PYTHONDONTWRITEBYTECODE -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV \
  -u TYMPAN_NATIVE_SIMD -u TYMPAN_DSP_BACKEND \
  PYTHONNOUSERSITE=1 PYTHONPATH="$WORK:$SITE" PYTHONPYCACHEPREFIX="$CACHE/pycache" OPENBLAS_NUM_THREADS=1 \
  TYMPAN_NATIVE_BUILD=0 TYMPAN_CACHE_DIR="$CACHE/tympan-cache" \
  "$QEMU" -L "$SYSROOT" "$PYBIN" "$ROOT/scripts/aarch64_python_check.py" --variant neon \
  ${check_args[@]+"${check_args[@]}"}
rc=$?
set -e
say "done in $((SECONDS - t_start)) s: $([ $rc = 0 ] && echo 'every kernel matches' || echo "FAILED (exit $rc)")"
[ $rc = 0 ] || exit 1
