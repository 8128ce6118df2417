# The lab master's pillar top (lab/labctl.py puts lab/pillar before the project's pillar/):
# the lab's controllers get the shared service catalogue and the lab site.
base:
  'lab-ctrl*':
    - openstack_ha.services
    - openstack_ha.sites.lab
