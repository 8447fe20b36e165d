"""Tether as a cluster: several gunicorn workers on several hosts sharing one Redis
(``TETHER_STORE=redis``; /work/shared/SCALE-OUT.md).

Every change of shared state is one Redis Function (``tether/stores/redis_functions.lua``),
checked against the store's epoch and the session owner's fencing token. Only a session's
owner runs its agent; prompts, Stops and answers from any worker commit to Redis, and the
owner learns of them from its own view of the log (a ``user`` or ``*_resolved`` event) or
from a control wake (``cancel N``), never from a call to it. Workers renew a heartbeat; a
worker whose heartbeat lapsed is reaped: its turns end ``interrupted``, its requests
resolve ``cancelled``, and its sessions are free for the next prompt (``--resume``).

Modules: :mod:`~tether.cluster.envelopes` (event bytes for the functions),
:mod:`~tether.cluster.prompts` (approvals and questions), :mod:`~tether.cluster.sessions`
(one session as a worker serves it), :mod:`~tether.cluster.membership` (heartbeats, the
reaper, takeover), :mod:`~tether.cluster.registry` (the transports' entry point).
"""
