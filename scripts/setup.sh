#!/usr/bin/env bash
# Tympan set-up for a fresh clone; safe to run again (idempotent).
#   bash scripts/setup.sh sample   device install (no torch) + run the edge pipeline on the bundled scene
#   bash scripts/setup.sh test     everything the tests need + ruff, mypy and the whole pytest suite
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-}"
case "$what" in sample|test) ;; *) echo "usage: bash scripts/setup.sh sample|test" >&2; exit 2;; esac

say() { printf 'setup: %s\n' "$*" >&2; }

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  say "Python 3.10 or newer is needed (found: $("$PY" --version 2>&1 || echo none)); set PYTHON=/path/to/python3"
  exit 1
fi

# System packages: installed when we can (root or passwordless sudo), otherwise we say what to do.
apt_install() {
  local pkgs=("$@") runner=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then runner=(sudo -n); else runner=(none); fi
  fi
  if ! command -v apt-get >/dev/null || [ "${runner[0]:-}" = none ]; then
    say "please install these system packages yourself: ${pkgs[*]}"
    say "  (Debian, Ubuntu, Raspberry Pi OS: sudo apt-get install ${pkgs[*]})"
    return 1
  fi
  say "installing system packages: ${pkgs[*]}"
  if ! "${runner[@]}" apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1; then
    "${runner[@]}" apt-get update -qq >/dev/null 2>&1 || true
    "${runner[@]}" apt-get install -y -qq "${pkgs[@]}" >/dev/null || { say "apt-get could not install ${pkgs[*]}"; return 1; }
  fi
}

need=()
ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2' || need+=(libportaudio2)
if [ "$what" = test ]; then
  command -v aplay >/dev/null || need+=(alsa-utils)
  { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || need+=(mosquitto)
  # DSP backends: a C compiler builds the native kernels, clang runs tinygrad's CPU path, and the NEON
  # build is checked under qemu (tests skip cleanly without these)
  command -v cc >/dev/null || need+=(gcc)
  command -v clang >/dev/null || need+=(clang)
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
  { command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null; } || need+=(qemu-user-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  if ! apt_install "${need[@]}"; then
    if [ "$what" = test ]; then say "the microphone tests need libportaudio2, the MQTT tests mosquitto, the NEON test gcc-aarch64-linux-gnu and qemu-user-static; they are skipped without them"; fi
    say "without libportaudio2 only file input works (microphone capture needs PortAudio)"
  fi
fi

# a .venv left half-made by an interrupted run (no pip in it) is made again
if [ -x .venv/bin/python ] && ! .venv/bin/python -m pip --version > /dev/null 2>&1; then
  say "recreating .venv (an earlier run left it without pip)"; rm -rf .venv
fi
[ -x .venv/bin/python ] || { say "creating .venv"; "$PY" -m venv .venv; }
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null

if [ "$what" = sample ]; then
  say "installing tympan (device install: no torch)"
  "$VPY" -m pip install -q .
  .venv/bin/tympan listen --input edge/data/sample_scene.flac --board respeaker-4mic-hat --events sample_events.jsonl
  exit 0
fi

say "installing tympan with the dev, eval and quantize extras (torch 2.13.0 CPU)"
"$VPY" -m pip install -q -e ".[dev,eval,quantize]"
say "ruff"; .venv/bin/ruff check .
say "mypy"; .venv/bin/mypy
say "pytest"; .venv/bin/python -m pytest -q
