#!/usr/bin/env bash
# Creates (or refreshes) the project venv in .venv with everything the project needs, then prints its python.
# Idempotent: a stamp keyed on pyproject.toml skips the install when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CGTAYLOR_VENV:-$root/.venv}"
python_bin="${PYTHON:-python3}"
stamp="$venv/.cgtaylor-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/ensure_env.sh" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
  echo "[cgtaylor] creating venv at $venv" >&2
  "$python_bin" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[cgtaylor] installing dependencies (first run takes about 2 minutes)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  # The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
  "$venv/bin/python" -m pip install -q "torch==2.13.0" >&2
  "$venv/bin/python" -m pip install -q -e "$root[dev]" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
