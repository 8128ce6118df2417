{%- from 'openstack_ha/map.jinja' import oha, me with context %}
{%- set r = oha.rabbitmq %}
{%- set nodes = salt['openstack_ha_rabbitmq.nodes'](oha) %}
{%- if r.enabled and me is not none and me.id in nodes | map(attribute='id') | list %}
# RabbitMQ on this node: names that resolve, the Erlang cookie before the first start, the
# configuration, the service, membership of the one cluster, then vhosts, users and policies.

openstack_ha-rabbitmq-package:
  pkg.installed:
    - name: {{ oha.packages.rabbitmq }}
{%- for n in nodes %}

openstack_ha-rabbitmq-host-{{ n.id }}:
  host.only:
    - name: {{ n.address | json }}
    - hostnames:
      - {{ n.id.split('.')[0] }}
{%- if n.id.split('.')[0] != n.id %}
      - {{ n.id }}
{%- endif %}
{%- endfor %}

openstack_ha-rabbitmq-cookie:
  openstack_ha_rabbitmq.cookie:
    - name: {{ oha.paths.rabbitmq_cookie }}
    - require:
      - pkg: openstack_ha-rabbitmq-package

openstack_ha-rabbitmq-env:
  file.managed:
    - name: /etc/rabbitmq/rabbitmq-env.conf
    - source: salt://openstack_ha/files/rabbitmq-env.conf.jinja
    - template: jinja
    - context:
        me: {{ me | json }}
        family: {{ oha.family }}
    - mode: '0644'
    - require:
      - pkg: openstack_ha-rabbitmq-package

openstack_ha-rabbitmq-config:
  file.managed:
    - name: /etc/rabbitmq/rabbitmq.conf
    - source: salt://openstack_ha/files/rabbitmq.conf.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        me: {{ me | json }}
        nodes: {{ nodes | json }}
    - user: root
    - group: rabbitmq
    - mode: '0640'
    - require:
      - pkg: openstack_ha-rabbitmq-package

{%- if r.prometheus.enabled %}

# Before the first start (offline: written to enabled_plugins) or on a running node (online;
# its listener takes the configured address at the node's next restart).
openstack_ha-rabbitmq-prometheus:
  openstack_ha_rabbitmq.plugin_enabled:
    - name: rabbitmq_prometheus
    - require:
      - pkg: openstack_ha-rabbitmq-package
      - openstack_ha_rabbitmq: openstack_ha-rabbitmq-cookie
      - file: openstack_ha-rabbitmq-env
    - require_in:
      - openstack_ha_rabbitmq: openstack_ha-rabbitmq-member
{%- endif %}

{%- if r.management.enabled %}

# The HTTP API on 127.0.0.1 only. rabbitmq.conf is read at start: a running node that gets
# the plugin online has the listener set in its VM first, or it would bind every address.
openstack_ha-rabbitmq-management:
  openstack_ha_rabbitmq.plugin_enabled:
    - name: rabbitmq_management
    - listener: {ip: 127.0.0.1, port: {{ r.management.port }}}
    - require:
      - pkg: openstack_ha-rabbitmq-package
      - openstack_ha_rabbitmq: openstack_ha-rabbitmq-cookie
      - file: openstack_ha-rabbitmq-env
      - file: openstack_ha-rabbitmq-config
    - require_in:
      - openstack_ha_rabbitmq: openstack_ha-rabbitmq-member
{%- endif %}

openstack_ha-rabbitmq-member:
  openstack_ha_rabbitmq.member:
    - name: {{ me.id }}
    - require:
      - openstack_ha_rabbitmq: openstack_ha-rabbitmq-cookie
      - file: openstack_ha-rabbitmq-env
      - file: openstack_ha-rabbitmq-config
{%- for n in nodes %}
      - host: openstack_ha-rabbitmq-host-{{ n.id }}
{%- endfor %}

openstack_ha-rabbitmq-accounts:
  openstack_ha_rabbitmq.accounts:
    - name: {{ oha.site }}
    - require:
      - openstack_ha_rabbitmq: openstack_ha-rabbitmq-member
{%- endif %}
