"""Redis being away, as the transports see it: 503 ``store_unavailable``, never a 500."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tether.errors import StoreUnavailable

F = TypeVar("F", bound=Callable[..., Any])


def available(method: F) -> F:
    """Turn Redis connection failures in ``method`` into :class:`StoreUnavailable`.

    :raises StoreUnavailable: Redis did not answer (refused, reset, timed out); whether a
        write landed is unknown: the log, read again, says.
    """
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(f"the Redis store does not answer ({exc.__class__.__name__}); "
                                   "retry once it is back") from None
    return wrapper  # type: ignore[return-value]
