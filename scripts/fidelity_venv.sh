#!/usr/bin/env bash
# Build (idempotently) the Python 3.12 virtualenv of the fidelity tier: IceProd's own server code
# (`iceprod==3.2.43` from PyPI) plus an in-memory MongoDB substitute. The venv lives inside the checkout
# (.fidelity-venv/, git-ignored). Exit status 0 = ready; 3 = no Python >= 3.12 found (tier is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FIDELITY_VENV:-$PWD/.fidelity-venv}"
STAMP="$VENV/.installed-3.2.43"
REQS="iceprod==3.2.43 mongomock==4.3.0"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQS" ]; then
  exit 0
fi

find_python() {
  local c
  for c in "${FIDELITY_PYTHON:-}" python3.12 python3.13 \
      "$HOME"/.pyenv/versions/3.12*/bin/python /root/.pyenv/versions/3.12*/bin/python \
      /home/*/.pyenv/versions/3.12*/bin/python "$HOME"/.pyenv/versions/3.13*/bin/python; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

PY="$(find_python)" || { echo "fidelity: no Python >= 3.12 found (set FIDELITY_PYTHON)" >&2; exit 3; }
echo "fidelity: building $VENV with $PY" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
UV="$(command -v uv || true)"
[ -x "$PWD/.venv/bin/uv" ] && UV="$PWD/.venv/bin/uv"
if [ -n "$UV" ]; then
  "$UV" pip install --quiet --python "$VENV/bin/python" $REQS
else
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQS
fi
echo "$REQS" > "$STAMP"
