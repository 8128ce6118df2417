{%- from 'openstack_ha/map.jinja' import oha, me with context %}
{%- set probe = oha.remediation.probe %}
# The controller's reports to the master's remediation loop, configured from the model.
openstack_ha-beacon-backends:
  openstack_ha_beacon.configured:
    - name: openstack_ha_backends
    - config:
      - interval: {{ probe.interval }}
      - timeout: {{ probe.timeout }}
      - keepalive: {{ probe.keepalive | default(true) | json }}
      - budget: {{ probe.timeout + 0.05 }}
      - fall: {{ probe.fall }}
      - rise: {{ probe.rise }}
      - heartbeat: {{ oha.remediation.heartbeat }}
      - socket: {{ oha.haproxy.socket }}
{%- if probe.watch | default(0) %}
      - watch: {{ probe.watch }}
      - cache: {{ oha.paths.probe_cache }}
{%- endif %}
      - targets: {{ salt['openstack_ha_probe.targets'](oha) | json }}

openstack_ha-beacon-vip:
  openstack_ha_beacon.configured:
    - name: openstack_ha_vip
    - config:
      - interval: 1
      - heartbeat: {{ oha.remediation.heartbeat }}
      - watch: true   # the kernel's address notices: a VIP change reported at once, not at the tick
      - vips:
{%- for inst in oha.vip_instances %}
          {{ inst.key | json }}: {address: {{ inst.address | json }}, interface: {{ inst.interface }}}
{%- endfor %}
{%- if me is not none and me.id in salt['openstack_ha_galera.node_ids'](oha) %}

openstack_ha-beacon-galera:
  openstack_ha_beacon.configured:
    - name: openstack_ha_galera
    - config:
      - interval: 1
      - url: http://{{ me.host }}:{{ oha.galera.health_port }}/status
      - timeout: 0.5
      - heartbeat: {{ oha.remediation.heartbeat }}
{%- endif %}
{%- if me is not none and me.id in salt['openstack_ha_rabbitmq.node_ids'](oha) %}

openstack_ha-beacon-rabbitmq:
  openstack_ha_beacon.configured:
    - name: openstack_ha_rabbitmq
    - config:
{%- set rabbit_target = salt['openstack_ha_rabbitmq.metrics_target'](oha) %}
      - interval: 1
      # rabbitmqctl (half a second of CPU a call): for partitions only when the metrics
      # endpoint is read every tick, for everything without it.
      - full_interval: {{ 600 if rabbit_target else 20 }}
      - timeout: 0.5
      - heartbeat: 60
{%- if rabbit_target %}
      - metrics: {{ rabbit_target | json }}
{%- endif %}
{%- set rabbit_api = salt['openstack_ha_rabbitmq.api_target'](oha) %}
{%- if rabbit_api %}
      # The management API as openstack-ha-monitor: its password is derived from the cookie
      # file on the controller, never written here (beacons.list shows this config).
      - api: {{ rabbit_api | json }}
{%- endif %}
{%- endif %}
