# The Keystone catalog of a site, made to match the pillar model. Run on the master:
#   salt-run state.orchestrate openstack_ha.orch.catalog [test=True] [pillar='{"site": "lab"}']
# (not included by `openstack_ha`: the controllers never hold the Keystone admin account).
openstack_ha keystone catalog:
  openstack_ha_catalog.present:
    - site: {{ pillar.get('site') | json }}
