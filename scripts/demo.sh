#!/usr/bin/env bash
# The main job: install what is missing, bring the three-controller lab up, apply
# openstack_ha to every controller from the lab's salt-master, and print the status table.
# The lab stays up afterwards: `lab/labctl status|shell ctrl1|down`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
lab="$repo/lab/labctl"
"$lab" up
echo "==> salt '*ctrl*' state.apply openstack_ha"
"$lab" salt '*ctrl*' state.apply openstack_ha --state-output=terse --state-verbose=False
echo "==> a real Keystone on every controller (database on the Galera cluster through the VIP)"
"$lab" keystone
echo "==> salt-run state.orchestrate openstack_ha.orch.catalog   (the Keystone catalog, from the pillar)"
"$lab" run state.orchestrate openstack_ha.orch.catalog --state-output=terse --state-verbose=False
echo "==> waiting for every VIP to have one holder"
"$lab" settle
echo "==> salt-run openstack_ha.status"
"$lab" run openstack_ha.status
