#!/usr/bin/env bash
# Install everything openstack_ha's lab and tests need on a Debian 12 machine. Idempotent:
# a second run only checks. Needs root (apt, and later namespaces and mounts).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
packages=(haproxy keepalived iproute2 procps curl util-linux psmisc
          mariadb-server mariadb-backup galera-4 socat rabbitmq-server
          prometheus prometheus-alertmanager redis-server
          prometheus-mysqld-exporter)  # installed here: the lab's controllers (network namespaces) reach no mirror

if [ "$(id -u)" != 0 ]; then echo "setup.sh: run as root" >&2; exit 1; fi

# Keep package postinst scripts from starting services on the host's default ports.
if [ ! -x /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$repo/.venv"
# A virtualenv without pip is one whose creation was interrupted: made again.
if [ ! -x "$venv/bin/pip" ]; then
  echo "==> creating $venv"
  python3 -m venv --clear "$venv"
  rm -f "$venv/.requirements.sha256"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$repo/requirements.txt" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> pip install -r requirements.txt (salt builds from source: a few minutes the first time)"
  "$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$venv/bin/pip" install -q -r "$repo/requirements.txt" 2>&1 | grep -v '^WARNING: Location' || true
  "$venv/bin/python" -c 'import salt, saltfactories, yaml, jinja2, requests, redis' 
  echo "$want" > "$stamp"
fi

# The lab's real Keystone lives in a virtualenv of its own (its pins are not openstack_ha's).
ks=/opt/openstack-ha/keystone
ks_stamp="$ks/.requirements.sha256"
ks_want=$(sha256sum "$repo/lab/keystone-requirements.txt" | cut -d' ' -f1)
if [ ! -f "$ks_stamp" ] || [ "$(cat "$ks_stamp")" != "$ks_want" ]; then
  echo "==> pip install Keystone into $ks (a minute or two the first time)"
  [ -x "$ks/bin/pip" ] || python3 -m venv --clear "$ks"
  "$ks/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$ks/bin/pip" install -q -r "$repo/lab/keystone-requirements.txt" 2>&1 | grep -v '^WARNING: Location' || true
  "$ks/bin/python" -W ignore -c 'import keystone.server.wsgi, pymysql, gunicorn'
  echo "$ks_want" > "$ks_stamp"
fi
