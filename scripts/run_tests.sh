#!/usr/bin/env bash
# The test suite: installs what it needs into .venv on first use, then runs pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$("$root/scripts/ensure_env.sh")"
cd "$root"
exec "$python" -m pytest "$@"
