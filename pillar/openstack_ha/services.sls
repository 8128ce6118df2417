# The OpenStack APIs every site runs, with the ports these services really listen on.
# HAProxy listens on the VIP at `port`; each controller's own API listens on its address at
# `backend_port` (default: the same port), so no port map is needed.
openstack_ha:
  services:
    keystone:
      port: 5000
      vip: public
      # Keystone's /v3 answer queues behind its real API calls (each renders the catalog): on
      # a busy controller it can take longer than the loop's default 0.25 s probe.
      check: {path: /v3, status: 200, timeout: 1}
      catalog: {type: identity, path: /v3}
    glance:
      port: 9292
      vip: public
      check: {path: /healthcheck, status: 200}
      catalog: {type: image, path: ''}
      retry_idempotent: false       # image uploads and downloads are long and not safely replayed
      timeouts: {server: 600, client: 600}
    designate:
      port: 9001
      vip: public
      check: {path: /, status: 200}
      catalog: {type: dns, path: ''}
    neutron:
      port: 9696
      vip: public
      check: {path: /, status: 200}
      catalog: {type: network, path: ''}
    nova:
      port: 8774
      vip: public
      check: {path: /, status: 200}
      catalog: {type: compute, path: /v2.1}
    placement:
      port: 8778
      vip: public
      check: {path: /, status: 200}
      catalog: {type: placement, path: ''}
    proxy:
      port: 5668
      vip: public
      check: {path: /, status: 200}
      catalog: {type: proxy, path: /v1/$(tenant_id)s}
