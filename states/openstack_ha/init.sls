# Everything openstack_ha manages on a controller. The pillar model is validated while these
# files render (map.jinja), so a bad pillar stops the run before any state executes.
include:
  - openstack_ha.haproxy
  - openstack_ha.keepalived
  - openstack_ha.galera
  - openstack_ha.rabbitmq
  - openstack_ha.beacons
