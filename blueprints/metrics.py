"""``GET /metrics``: the server's figures in the Prometheus text format (tether.metrics).

It needs the token like every route but ``/healthz``: point Prometheus at it with
``authorization: {credentials: <token>}`` (a bearer token) in the scrape config. The format
follows the scraper's ``Accept`` header (prometheus-client's ``choose_encoder``: text 0.0.4 by
default, OpenMetrics when asked).
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from prometheus_client.exposition import choose_encoder

from blueprints import current_core

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(current_core().metrics.registry), content_type=content_type,
                    headers={"Cache-Control": "no-store"})
