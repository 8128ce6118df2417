#!/usr/bin/env bash
# Run every test: installs what is missing (scripts/setup.sh), the linter, pytest over tests/,
# and beside it the adoption and syndic tests on Salt 3006 and 3007 (scripts/salt-releases.sh).
# The lab tests bring the lab up themselves and take it down afterwards, also on failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# A whole run stays inside CI's time limit (90 minutes): tests not started within
# OHA_TEST_MINUTES (default 62) of this script's start are skipped and listed as such
# (tests/conftest.py).
started=$(date +%s)
export OHA_TEST_DEADLINE=${OHA_TEST_DEADLINE:-$(( started + ${OHA_TEST_MINUTES:-62} * 60 ))}
bash "$repo/scripts/setup.sh"
cd "$repo"
echo "==> ruff check (pyproject.toml)"
"$repo/.venv/bin/ruff" check --no-cache .
# With arguments (test files or node ids) only those run; without, every test under tests/.
whole=$(( $# == 0 ))
[ $# -gt 0 ] || set -- tests
# The whole run also covers the other supported Salt releases (scripts/salt-releases.sh). They
# need no lab: they run beside pytest's first part (the unit tests, the files that need no lab,
# the lab's start and its first apply), and the lab's timing-sensitive tests wait for them
# (OHA_BESIDE_PID, the `applied` fixture in tests/integration/conftest.py).
beside=""
if [ "$whole" -eq 1 ]; then
  beside_log=$(mktemp /tmp/oha-salt-releases.XXXXXX.log)
  echo "==> the tests on Salt 3006 and 3007 run beside the first part of pytest (their output follows pytest's)"
  setsid bash "$repo/scripts/salt-releases.sh" > "$beside_log" 2>&1 &
  beside=$!
  export OHA_BESIDE_PID=$beside
  # Stopped with the run: they are in a process group of their own.
  trap '[ -z "$beside" ] || kill -- -"$beside" 2>/dev/null || true' EXIT
fi
rc=0
"$repo/.venv/bin/python" -m pytest -p no:cacheprovider -o log_cli=false -q -rfEs --durations=25 --log-level=WARNING "$@" || rc=$?
if [ -n "$beside" ]; then
  beside_rc=0
  wait "$beside" || beside_rc=$?
  beside=""
  echo "==> the adoption and syndic tests on Salt 3006 and 3007 (run beside pytest; exit status $beside_rc)"
  cat "$beside_log"
  rm -f "$beside_log"
  [ "$beside_rc" -eq 0 ] || [ "$rc" -ne 0 ] || rc=$beside_rc
fi
exit "$rc"
