# Which site each controller belongs to. One master drives every site listed here; each
# controller gets the shared service catalogue plus its own site's controllers, VIPs and secrets.
base:
  'cloudcontrol100[5-7].wikimedia.org':
    - openstack_ha.services
    - openstack_ha.sites.eqiad1
  'cloudcontrol200[1-3]-dev.wikimedia.org':
    - openstack_ha.services
    - openstack_ha.sites.codfw1dev
  'lab-ctrl*':
    - openstack_ha.services
    - openstack_ha.sites.lab
