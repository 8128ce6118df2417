# Example production site, modelled on Wikimedia Cloud Services' eqiad1 region.
# Secrets are shown inline for the example only: keep them in an encrypted pillar (gpg renderer).
openstack_ha:
  site: eqiad1
  network: 10.64.20.0/24
  controllers:                      # order matters: first = preferred VIP holder and Galera writer
    - {id: cloudcontrol1005.wikimedia.org, address: 10.64.20.5}
    - {id: cloudcontrol1006.wikimedia.org, address: 10.64.20.6}
    - {id: cloudcontrol1007.wikimedia.org, address: 10.64.20.7}
  vips:
    public:   {address: 10.64.20.100, interface: eno1, vrid: 51, fqdn: openstack.eqiad1.wikimediacloud.org}
    internal: {address: 10.64.20.101, interface: eno1, vrid: 52, fqdn: openstack-internal.eqiad1.wikimediacloud.org}
  galera:
    enabled: true
    cluster_name: eqiad1
    vip: internal
    sst_password: example-sst-secret-1005
    monitor_password: example-monitor-secret-1005
    root_password: example-root-secret-1005
    databases:
      keystone: {user: keystone, password: example-keystone-db-secret}
      nova: {user: nova, password: example-nova-db-secret}
  rabbitmq:
    enabled: true
    cookie: ExampleEqiad1ErlangCookie2026
    users:
      openstack: {password: example-rabbit-secret-1005, vhost: /openstack}
    policies:
      notifications-ha:
        vhost: /openstack
        pattern: '^(notifications|versioned_notifications)\.'
        definition: {ha-mode: all, ha-sync-mode: automatic}
  keystone:
    region: eqiad1-r
    scheme: https
    endpoint_mode: vip
  haproxy:
    stats: {enabled: true, port: 8404, user: admin, password: example-stats-secret}
