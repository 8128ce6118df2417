{%- from 'openstack_ha/map.jinja' import oha, me with context %}
{%- if me is none %}
openstack_ha-keepalived-not-a-controller:
  test.fail_without_changes:
    - name: "{{ grains['id'] }} is not a controller of site {{ oha.site }} (openstack_ha:controllers)"
{%- else %}
include:
  - openstack_ha.haproxy

openstack_ha-keepalived-package:
  pkg.installed:
    - pkgs:
      - {{ oha.packages.keepalived }}
      - socat  # the track script's client of HAProxy's admin socket

openstack_ha-keepalived-track-script:
  file.managed:
    - name: {{ oha.paths.keepalived_scripts }}/haproxy_serving
    - source: salt://openstack_ha/files/haproxy_serving.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        timeout: 0.5
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

# keepalived -t must accept the rendered file before it replaces the live one.
openstack_ha-keepalived-config:
  openstack_ha_config.managed:
    - name: {{ oha.paths.keepalived_config }}
    - source: salt://openstack_ha/files/keepalived.conf.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        me: {{ me | json }}
        realtime_allowed: {{ salt['openstack_ha.capable']('sys_resource') | json }}
    - user: root
    - group: root
    - mode: '0640'
    - check: /usr/sbin/keepalived -l -t -f
    - require:
      - pkg: openstack_ha-keepalived-package
      - file: openstack_ha-keepalived-track-script

openstack_ha-keepalived-running:
  openstack_ha_service.running:
    - name: keepalived
    - pidfile: {{ oha.paths.keepalived_pidfile }}
    # The VRRP and checker children outlive a killed parent by a moment; a keepalived started
    # while they live exits at once ("daemon is already running").
    - companions:
      - /run/vrrp.pid
      - /run/checkers.pid
      - /run/keepalived/vrrp.pid
      - /run/keepalived/checkers.pid
    - require:
      - openstack_ha_service: openstack_ha-haproxy-running
    - watch:
      - openstack_ha_config: openstack_ha-keepalived-config
      - file: openstack_ha-keepalived-track-script
{%- endif %}
