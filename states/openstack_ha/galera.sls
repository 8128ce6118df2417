{%- from 'openstack_ha/map.jinja' import oha, me with context %}
{%- set g = oha.galera %}
{%- set node_ids = salt['openstack_ha_galera.node_ids'](oha) %}
{%- if g.enabled and me is not none and me.id in node_ids %}
# MariaDB Galera on this node: packages, wsrep configuration, the health daemon HAProxy and
# the beacons ask, then membership (join, or bootstrap only where it cannot split the
# cluster), then the accounts.

openstack_ha-galera-packages:
  pkg.installed:
    - pkgs: {{ oha.packages.galera | json }}

openstack_ha-galera-log-dir:
  file.directory:
    - name: /var/log/mysql
    - user: mysql
    - group: adm
    - mode: '2750'
    - require:
      - pkg: openstack_ha-galera-packages

openstack_ha-galera-defaults:
  file.managed:
    - name: {{ oha.paths.galera_defaults }}
    - source: salt://openstack_ha/files/mariadb.default.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
    - mode: '0644'
    - require:
      - pkg: openstack_ha-galera-packages

# No secret in it (the SST credentials are in the secrets file below): its diffs are shown.
# A change applies at the node's next start: restart nodes one at a time, each back to
# Synced before the next (a state never restarts a cluster member by itself).
openstack_ha-galera-config:
  file.managed:
    - name: {{ oha.paths.galera_config }}
    - source: salt://openstack_ha/files/galera.cnf.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        me: {{ me | json }}
    - user: root
    - group: mysql
    - mode: '0640'
    - require:
      - pkg: openstack_ha-galera-packages

# wsrep_sst_auth: readable by mysqld (group mysql), never shown in any output.
openstack_ha-galera-secrets:
  openstack_ha_secret.file:
    - name: {{ oha.paths.galera_secrets_config }}
    - kind: galera_sst
    - group: mysql
    - mode: '0640'
    - require:
      - pkg: openstack_ha-galera-packages

{%- if g.tls is defined %}

# mysqld (group mysql) reads the certificates and the key; nobody else may list the directory.
openstack_ha-galera-tls-dir:
  file.directory:
    - name: {{ oha.paths.galera_tls_dir }}
    - user: root
    - group: mysql
    - mode: '0750'
    - require:
      - pkg: openstack_ha-galera-packages
{%- for kind, file, mode in [('galera_tls_ca', 'ca.pem', '0644'), ('galera_tls_cert', 'node.pem', '0644'), ('galera_tls_key', 'node.key', '0640')] %}

openstack_ha-{{ kind | replace('_', '-') }}:
  openstack_ha_secret.file:
    - name: {{ oha.paths.galera_tls_dir }}/{{ file }}
    - kind: {{ kind }}
    - group: mysql
    - mode: '{{ mode }}'
    - require:
      - file: openstack_ha-galera-tls-dir
    - require_in:
      - openstack_ha_galera: openstack_ha-galera-member
{%- endfor %}
{%- endif %}

openstack_ha-galera-health-script:
  file.managed:
    - name: {{ oha.paths.galera_health }}
    - source: salt://openstack_ha/files/galera_health.py
    - mode: '0755'

{#- The health daemon's command line, in one place: the init script or the systemd unit runs it. #}
{%- set health_args = [oha.paths.galera_health, '--node', me.id, '--port', oha.galera.health_port,
      '--socket', oha.paths.galera_socket, '--datadir', oha.paths.galera_datadir,
      '--maintenance-file', oha.paths.galera_maintenance_file, '--sst-user', oha.galera.sst_user,
      '--starting-file', oha.paths.galera_starting_file, '--starting-max', oha.galera.startup_timeout + 120,
      '--pidfile', oha.paths.galera_pidfile | replace('{node}', me.id), '--allow', '127.0.0.1', '--allow', '::1'] %}
{%- for address in me.addresses.values() %}{% do health_args.extend(['--address', address]) %}{% endfor %}
{%- for c in oha.controllers %}{% for address in c.addresses.values() %}{% do health_args.extend(['--allow', address]) %}{% endfor %}{% endfor %}
{%- if oha.galera.sst_method == 'mariabackup' %}{% do health_args.append('--available-when-donor') %}{% endif %}
{%- if g.evict_dead_peers %}
{%-   for c in oha.controllers if c.id in node_ids and c.id != me.id %}{% do health_args.extend(['--peer', c.id ~ '=' ~ c.address]) %}{% endfor %}
{%- endif %}
{%- set systemd = grains.get('init') == 'systemd' %}
{%- if systemd %}
# Where systemd is PID 1 it runs the daemon and restarts it when it dies (a dead daemon would
# make HAProxy move this node's writer role for nothing until the next apply).
openstack_ha-galera-health-init:
  file.managed:
    - name: /etc/systemd/system/{{ oha.paths.galera_health_service }}.service
    - source: salt://openstack_ha/files/galera-health.service.jinja
    - template: jinja
    - context:
        args: {{ health_args | join(' ') | json }}
    - mode: '0644'

openstack_ha-galera-health-running:
  service.running:
    - name: {{ oha.paths.galera_health_service }}
    - enable: True
    - require:
      - pkg: openstack_ha-galera-packages
    - watch:
      - file: openstack_ha-galera-health-script
      - file: openstack_ha-galera-health-init
{%- else %}
openstack_ha-galera-health-init:
  file.managed:
    - name: /etc/init.d/{{ oha.paths.galera_health_service }}
    - source: salt://openstack_ha/files/galera-health.init.jinja
    - template: jinja
    - context:
        oha: {{ oha | json }}
        args: {{ health_args | join(' ') | json }}
    - mode: '0755'

openstack_ha-galera-health-running:
  openstack_ha_service.running:
    - name: {{ oha.paths.galera_health_service }}
    - pidfile: {{ oha.paths.galera_health_pidfile }}
    - require:
      - pkg: openstack_ha-galera-packages
    - watch:
      - file: openstack_ha-galera-health-script
      - file: openstack_ha-galera-health-init
{%- endif %}

openstack_ha-galera-member:
  openstack_ha_galera.member:
    - name: {{ me.id }}
    - require:
      - file: openstack_ha-galera-config
      - openstack_ha_secret: openstack_ha-galera-secrets
      - file: openstack_ha-galera-defaults
      - file: openstack_ha-galera-log-dir
      - {{ 'service' if systemd else 'openstack_ha_service' }}: openstack_ha-galera-health-running

openstack_ha-galera-accounts:
  openstack_ha_galera.users:
    - name: {{ g.cluster_name }}
    - require:
      - openstack_ha_galera: openstack_ha-galera-member
{%- if g.exporter.enabled %}

# Prometheus's mysqld_exporter on this node's address, logged in as the monitor account
# through the local socket (its credentials in a file only the exporter's user reads).
openstack_ha-galera-exporter-package:
  pkg.installed:
    - name: {{ oha.packages.mysqld_exporter }}

openstack_ha-galera-exporter-credentials:
  openstack_ha_secret.file:
    - name: {{ oha.paths.mysqld_exporter_credentials }}
    - kind: mysqld_exporter
    - user: prometheus
    - group: prometheus
    - mode: '0600'
    - require:
      - pkg: openstack_ha-galera-exporter-package

openstack_ha-galera-exporter-defaults:
  file.managed:
    - name: {{ oha.paths.mysqld_exporter_defaults }}
    - contents: |
        # Managed by Salt (openstack_ha): the exporter's arguments.
        ARGS="--config.my-cnf={{ oha.paths.mysqld_exporter_credentials }} --web.listen-address={{ me.host }}:{{ g.exporter.port }} --no-collect.slave_status"
    - mode: '0644'
    - require:
      - pkg: openstack_ha-galera-exporter-package

openstack_ha-galera-exporter-running:
{%- if systemd %}
  service.running:
    - name: prometheus-mysqld-exporter
    - enable: True
{%- else %}
  openstack_ha_service.running:
    - name: prometheus-mysqld-exporter
    - pidfile: {{ oha.paths.mysqld_exporter_pidfile }}
    - reload_function: service.restart
    - reload_kwargs: {name: prometheus-mysqld-exporter}
{%- endif %}
    - require:
      - openstack_ha_galera: openstack_ha-galera-accounts
    - watch:
      - openstack_ha_secret: openstack_ha-galera-exporter-credentials
      - file: openstack_ha-galera-exporter-defaults
{%- endif %}
{%- endif %}
