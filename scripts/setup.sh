#!/usr/bin/env bash
# make setup: idempotent. Installs the Debian packages in setup/apt-packages.txt that are
# missing (as root), creates .venv with the pinned Python dependencies and installs basisit.
# requirements.lock pins every package, pip and setuptools included, with its hashes; it is made
# by pip-tools from pyproject.toml and setup/build-requirements.in (the command is in its header).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
want=$(grep -vE '^\s*(#|$)' setup/apt-packages.txt | tr '\n' ' ')
missing=()
for pkg in $want; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.basisit-setup
want_hash=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_hash" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; basisit needs Python 3.11 (Debian 12: apt-get install python3)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# Everything at the version and hash the lock names: a package that is not in the lock, or whose
# download does not match, fails the setup.
"${pip[@]}" --require-hashes -r requirements.lock
# basisit itself: an editable install cannot be hash-checked, so no dependencies (all in the lock)
# and no build isolation (the locked setuptools builds it, nothing else is fetched).
"${pip[@]}" --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check >&2; exit 1; }
echo "$want_hash" > "$stamp"
echo "setup: .venv ready ($(.venv/bin/python --version), basisit $(.venv/bin/python -c 'import basisit; print(basisit.__version__)'))"
