# Example production site, modelled on Wikimedia Cloud Services' codfw1dev test region, on different controllers and VIPs.
# Secrets are shown inline for the example only: keep them in an encrypted pillar (gpg renderer).
openstack_ha:
  site: codfw1dev
  network: 10.192.20.0/24
  controllers:                      # order matters: first = preferred VIP holder and Galera writer
    - {id: cloudcontrol2001-dev.wikimedia.org, address: 10.192.20.5}
    - {id: cloudcontrol2002-dev.wikimedia.org, address: 10.192.20.6}
    - {id: cloudcontrol2003-dev.wikimedia.org, address: 10.192.20.7}
  vips:
    public:   {address: 10.192.20.100, interface: eno2, vrid: 61, fqdn: openstack.codfw1dev.wikimediacloud.org}
    internal: {address: 10.192.20.101, interface: eno2, vrid: 62, fqdn: openstack-internal.codfw1dev.wikimediacloud.org}
  galera:
    enabled: true
    cluster_name: codfw1dev
    vip: internal
    sst_password: example-sst-secret-2001
    monitor_password: example-monitor-secret-2001
    root_password: example-root-secret-2001
    databases:
      keystone: {user: keystone, password: example-keystone-db-secret}
      nova: {user: nova, password: example-nova-db-secret}
  rabbitmq:
    enabled: true
    cookie: ExampleEqiad1ErlangCookie2026
    users:
      openstack: {password: example-rabbit-secret-2001, vhost: /openstack}
    policies:
      notifications-ha:
        vhost: /openstack
        pattern: '^(notifications|versioned_notifications)\.'
        definition: {ha-mode: all, ha-sync-mode: automatic}
  keystone:
    region: codfw1dev-r
    scheme: https
    endpoint_mode: vip
  haproxy:
    stats: {enabled: true, port: 8404, user: admin, password: example-stats-secret}
