# Every openstack_ha beacon event: hand tag and data, as JSON, to the runner. No decision here;
# events from minions that are not controllers are dropped, and events of a reporter's beacon
# that one of the same is already waiting for are folded into it, before the runner call (see
# _modules/openstack_ha_admit.py: a flood must not fill the reactor's queue).
{%- if salt['openstack_ha_admit.admit'](tag, data) %}
openstack_ha_handle_event:
  runner.openstack_ha.handle_event:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
{%- endif %}
