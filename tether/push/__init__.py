"""Web Push (RFC 8030, 8291, 8292): a person hears that an agent waits with every tab closed.

- :mod:`tether.push.keys`: the server's VAPID key pair, made at the first start and kept in
  the data dir, or given as ``TETHER_VAPID_PRIVATE_KEY``.
- :mod:`tether.push.subscriptions`: which endpoints a subscription may name, and where the
  subscriptions are kept (memory, a file in the data dir, or Redis).
- :mod:`tether.push.dispatch`: which request is pushed to whom, exactly once across the
  cluster, and the sender that posts off the request path with bounded retries.

Shapes: docs/protocol.md, "Web Push".
"""
