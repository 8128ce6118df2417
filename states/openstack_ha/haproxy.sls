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
{%- if oha.vip_instances | selectattr('family', 'equalto', 'ipv6') | list %}

# The same for the site's IPv6 VIPs (a separate switch in the kernel).
openstack_ha-haproxy-nonlocal-bind-ipv6:
  sysctl.present:
    - name: net.ipv6.ip_nonlocal_bind
    - value: 1
    - config: {{ oha.paths.sysctl_file }}
{%- endif %}

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
  openstack_ha_secret.file:
    - name: /etc/haproxy/certs/{{ name }}.pem
    - kind: tls
    - service: {{ name }}
    - mode: '0600'
    - makedirs: True
    - require:
      - pkg: openstack_ha-haproxy-package
    - require_in:
      - openstack_ha_config: openstack_ha-haproxy-config
{%- endfor %}

# The stats page's user and password: a second configuration file, loaded with -f.
openstack_ha-haproxy-secrets:
  openstack_ha_secret.file:
    - name: {{ oha.paths.haproxy_secrets_config }}
    - kind: haproxy_stats
    - group: haproxy
    - mode: '0640'
    - require:
      - pkg: openstack_ha-haproxy-package

openstack_ha-haproxy-defaults:
  file.managed:
    - name: {{ oha.paths.haproxy_defaults }}
    - contents: |
        # Managed by Salt (openstack_ha.haproxy). Read by HAProxy's init script and unit.
        EXTRAOPTS="-f {{ oha.paths.haproxy_secrets_config }}"
    - mode: '0644'
    - require:
      - pkg: openstack_ha-haproxy-package

# haproxy -c must accept the rendered file before it replaces the live one; if it does not,
# the state fails with HAProxy's own message and the running HAProxy is not touched.
openstack_ha-haproxy-config:
  openstack_ha_config.managed:
    - name: {{ oha.paths.haproxy_config }}
    - source: salt://openstack_ha/files/haproxy.cfg.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        me: {{ me | json }}
    - user: root
    - group: haproxy
    - mode: '0640'
    - check: /usr/sbin/haproxy -c -f {{ oha.paths.haproxy_secrets_config }} -f
    - require:
      - pkg: openstack_ha-haproxy-package
      - sysctl: openstack_ha-haproxy-nonlocal-bind
      - openstack_ha_secret: openstack_ha-haproxy-secrets

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
        extra_config: {{ oha.paths.haproxy_secrets_config }}
    # The saved server state carries each server's address and ports, and HAProxy applies them
    # over the configuration's: a server whose address or ports changed starts afresh instead.
    - prepare_function: openstack_ha_haproxy.prepare_start
    - prepare_kwargs:
        state_file: {{ oha.haproxy.state_file }}
        config_file: {{ oha.paths.haproxy_config }}
    - require:
      - file: openstack_ha-haproxy-run-dir
      - file: openstack_ha-haproxy-defaults
    - watch:
      - openstack_ha_config: openstack_ha-haproxy-config
      - openstack_ha_secret: openstack_ha-haproxy-secrets
{%- endif %}
