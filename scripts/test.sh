#!/usr/bin/env bash
# Run every test: installs what is missing (scripts/setup.sh), the linter, then pytest over tests/.
# The lab tests bring the lab up themselves and take it down afterwards, also on failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
echo "==> ruff check (pyproject.toml)"
"$repo/.venv/bin/ruff" check --no-cache .
exec "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -o log_cli=false -q tests "$@"
