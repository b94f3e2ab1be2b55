#!/usr/bin/env bash
# Sourced, not run: picks a Python that has ntgcalls and numpy for the interop test and the
# receive comparison (tests/interop/run.sh, scripts/compare-receive.sh) and sets PY to it.
# Reuses a Python that has both (INTEROP_PYTHON, then .venv-interop, then python3), else makes
# .venv-interop and installs ntgcalls==$NTGCALLS_VERSION (default 3.0.5, the version
# docs/protocol.md §12 was observed with) and numpy into it.
# shellcheck shell=bash

VENV=.venv-interop
NTGCALLS_VERSION=${NTGCALLS_VERSION:-3.0.5}

has_deps() { "$1" -c 'import ntgcalls, numpy' >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

make_venv() {
  python3 -m venv "$VENV" >/dev/null 2>&1 && [ -x "$VENV/bin/pip" ] && return 0
  # Debian and Ubuntu ship venv's pip bootstrap separately.
  rm -rf "$VENV"
  if command -v apt-get >/dev/null 2>&1; then
    echo "interop: installing python3-venv" >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV" && [ -x "$VENV/bin/pip" ] && return 0
    rm -rf "$VENV"
  fi
  return 1
}

pick_python() {
  if [ -n "${INTEROP_PYTHON:-}" ]; then
    PY=$INTEROP_PYTHON
  elif [ -x "$VENV/bin/python" ] && has_deps "$VENV/bin/python"; then
    PY=$VENV/bin/python
  elif has_deps python3; then
    PY=python3
  elif make_venv; then
    echo "interop: installing ntgcalls==$NTGCALLS_VERSION and numpy into $VENV" >&2
    "$VENV/bin/pip" install -q "ntgcalls==$NTGCALLS_VERSION" numpy
    PY=$VENV/bin/python
  else
    echo "interop: no venv; installing ntgcalls and numpy with pip --user" >&2
    python3 -m pip install -q --user "ntgcalls==$NTGCALLS_VERSION" numpy ||
      python3 -m pip install -q --user --break-system-packages "ntgcalls==$NTGCALLS_VERSION" numpy
    PY=python3
  fi
  if ! has_deps "$PY"; then
    echo "interop: $PY cannot import ntgcalls and numpy" >&2
    exit 1
  fi
}
