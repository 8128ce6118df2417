{%- from 'openstack_ha/map.jinja' import oha, me with context %}
{%- if me is none %}
openstack_ha-haproxy-not-a-controller:
  test.fail_without_changes:
    - name: "{{ grains['id'] }} is not a controller of site {{ oha.site }} (openstack_ha:controllers)"
{%- else %}

# A backup controller's HAProxy binds the VIP before keepalived moves it there.
openstack_ha-haproxy-nonlocal-bind:
  sysctl.present:
    - name: net.ipv4.ip_nonlocal_bind
    - value: 1
    - config: {{ oha.paths.sysctl_file }}

openstack_ha-haproxy-package:
  pkg.installed:
    - name: {{ oha.packages.haproxy }}

# The socket itself is mode 600; the init script owns this directory's mode.
openstack_ha-haproxy-run-dir:
  file.directory:
    - name: {{ salt['file.dirname'](oha.haproxy.socket) }}
    - makedirs: True
{%- for name, svc in oha.services | dictsort if svc.tls is defined %}

openstack_ha-haproxy-tls-{{ name }}:
  file.managed:
    - name: /etc/haproxy/certs/{{ name }}.pem
    - contents: |
        {{ svc.tls.certificate | indent(8) }}
        {{ svc.tls.key | indent(8) }}
    - mode: '0600'
    - makedirs: True
    - show_changes: False
    - require:
      - pkg: openstack_ha-haproxy-package
    - require_in:
      - file: openstack_ha-haproxy-config
{%- endfor %}

# haproxy -c must accept the rendered file before it replaces the live one; if it does not,
# the state fails with HAProxy's own message and the running HAProxy is not touched.
openstack_ha-haproxy-config:
  file.managed:
    - name: {{ oha.paths.haproxy_config }}
    - source: salt://openstack_ha/files/haproxy.cfg.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        me: {{ me | json }}
    - user: root
    - group: haproxy
    - mode: '0640'
    - show_changes: False
    - check_cmd: /usr/sbin/haproxy -c -f
    - require:
      - pkg: openstack_ha-haproxy-package
      - sysctl: openstack_ha-haproxy-nonlocal-bind

# Reload = save server state (drains included), then a seamless master-worker reload.
openstack_ha-haproxy-running:
  openstack_ha_service.running:
    - name: haproxy
    - pidfile: {{ oha.paths.haproxy_pidfile }}
    - reload_function: openstack_ha_haproxy.reload
    - reload_kwargs:
        socket_path: {{ oha.haproxy.socket }}
        state_file: {{ oha.haproxy.state_file }}
        pidfile: {{ oha.paths.haproxy_pidfile }}
        config_file: {{ oha.paths.haproxy_config }}
    # The saved server state carries each server's address and ports, and HAProxy applies them
    # over the configuration's: a server whose address or ports changed starts afresh instead.
    - prepare_function: openstack_ha_haproxy.prepare_start
    - prepare_kwargs:
        state_file: {{ oha.haproxy.state_file }}
        config_file: {{ oha.paths.haproxy_config }}
    - require:
      - file: openstack_ha-haproxy-run-dir
    - watch:
      - file: openstack_ha-haproxy-config
{%- endif %}
