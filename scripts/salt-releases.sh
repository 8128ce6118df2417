#!/usr/bin/env bash
# The other supported Salt releases (3006 LTS, 3007; the main suite runs 3008): the test of an
# existing master adopting openstack_ha (two sites, validate, render, status) and the syndic
# layout's (a top master over a regional one; Salt 3008's syndic returns nothing) run on each,
# with the unit test of the minion's loader wrapper (_utils/openstack_ha_job_loaders.py),
# in a virtualenv of its own (/opt/openstack-ha/salt-<release>), installed idempotently.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
for pin in "3006 salt==3006.29" "3007 salt==3007.16"; do
  release=${pin%% *}
  want="${pin#* } pytest-salt-factories==1.0.5 pytest==9.2.0 pyyaml jinja2"
  venv=/opt/openstack-ha/salt-$release
  if [ ! -f "$venv/.pins" ] || [ "$(cat "$venv/.pins")" != "$want" ]; then
    echo "==> Salt $release: pip install into $venv (a minute or two the first time)"
    # a virtualenv without pip is one whose creation was interrupted: made again
    [ -x "$venv/bin/pip" ] || python3 -m venv --clear "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q $want 2>&1 | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -c 'import salt, saltfactories'
    echo "$want" > "$venv/.pins"
  fi
  echo "==> the adoption and syndic tests on Salt $("$venv/bin/python" -c 'import salt.version; print(salt.version.__saltstack_version__)')"
  # One pytest per file: salt-factories keeps one root per session, each file sets its own.
  # And the loader wrapper's unit test: it hooks Salt's minion, whose job context differs by release.
  for test in unit/test_job_loaders.py integration/test_multisite_factories.py integration/test_syndic_factories.py; do
    (cd "$repo" && "$venv/bin/python" -m pytest -p no:cacheprovider -o log_cli=false -q "tests/$test")
  done
done
