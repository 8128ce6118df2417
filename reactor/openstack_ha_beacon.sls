# Every openstack_ha beacon event: hand tag and data, as JSON, to the runner. No decision here.
openstack_ha_handle_event:
  runner.openstack_ha.handle_event:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
