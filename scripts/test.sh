#!/usr/bin/env bash
# Run every test: installs what is missing (scripts/setup.sh), the linter, pytest over tests/,
# then the adoption test on Salt 3006 and 3007 (scripts/salt-releases.sh).
# The lab tests bring the lab up themselves and take it down afterwards, also on failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
echo "==> ruff check (pyproject.toml)"
"$repo/.venv/bin/ruff" check --no-cache .
"$repo/.venv/bin/python" -m pytest -p no:cacheprovider -o log_cli=false -q --durations=15 tests "$@"
# The whole run (no pytest arguments) also covers the other supported Salt releases.
if [ $# -eq 0 ]; then
  bash "$repo/scripts/salt-releases.sh"
fi
