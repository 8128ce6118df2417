# The lab site (lab/): three controllers in network namespaces on one machine, bridged on
# 10.213.0.0/24. Same keys as a production site; only names, addresses and secrets differ.
openstack_ha:
  site: lab
  network: 10.213.0.0/24
  controllers:
    - {id: lab-ctrl1, address: 10.213.0.11}
    - {id: lab-ctrl2, address: 10.213.0.12}
    - {id: lab-ctrl3, address: 10.213.0.13}
  vips:
    public:   {address: 10.213.0.100, interface: eth0, vrid: 51, fqdn: openstack.lab.example}
    internal: {address: 10.213.0.101, interface: eth0, vrid: 52, fqdn: openstack-internal.lab.example}
  galera:
    enabled: true
    cluster_name: lab
    vip: internal
    sst_password: lab-sst-secret-0001
    monitor_password: lab-monitor-secret-0001
    root_password: lab-root-secret-0001
    databases:
      keystone: {user: keystone, password: lab-keystone-db-secret}
  rabbitmq:
    enabled: true
    cookie: LabErlangCookieNotForProduction
    users:
      openstack: {password: lab-rabbit-secret-0001, vhost: /openstack}
    policies:
      notifications-ha:
        vhost: /openstack
        pattern: '^(notifications|versioned_notifications)\.'
        definition: {ha-mode: all, ha-sync-mode: automatic}
  keystone:
    region: lab-r
    scheme: http
    endpoint_mode: vip
  haproxy:
    stats: {enabled: true, port: 8404, user: admin, password: lab-stats-secret}
    # The stand-in APIs answer in milliseconds: a request still unanswered after 10 s is hung,
    # so a POST stuck on a stopped backend fails (504) in 10 s instead of 120 s.
    timeouts: {server: 10}
