"""Browser SDK routes: `/v1/t`, `/v1/p`, `/v1/i`, `/v1/b` under the public client key, with CORS.

A browser SDK's key is public (anyone can read it out of the page), so these routes take only
`STALLWATCH_CLIENT_KEY`, never the server write key's powers: product events and a contact's
own email and name, opt-outs, times clamped to the receive time (segment.py, `trusted=False`).
The client key is refused on the server routes (`/v1/batch`, `/v1/group`, ...), which take
only `STALLWATCH_WRITE_KEY`.

The shapes are the ones the SDKs send:
- analytics.js (segmentio/analytics-next, packages/browser/src/plugins/segmentio): one message
  per call to `https://{apiHost}/{type[0]}` (apiHost defaults to `api.segment.io/v1`, so
  `/v1/t`, `/v1/p`, `/v1/i`), the `writeKey` inside the JSON body, `Content-Type: text/plain`
  so the browser sends no preflight (fetch-dispatcher.ts); in batching mode
  `{"writeKey", "batch": [...], "sentAt"}` to `/v1/b` (batched-dispatcher.ts). Its group
  and alias calls go to `/v1/g` and `/v1/a`, which do not exist here (404): account traits
  come from server-side sources.
- RudderStack JS SDK (rudderlabs/rudder-sdk-js, packages/analytics-js-plugins/src/xhrQueue):
  the write key as HTTP Basic user name (`setAuthHeader(writeKey)`), JSON bodies (one message,
  or `{"batch": [...], "sentAt"}`), and an `AnonymousId` header, hence a CORS preflight.
  It posts to `{dataPlaneUrl}/v1/{type}` and `/v1/batch`, the server routes' paths, so it
  reaches these routes only through a proxy that maps them (track -> t, batch -> b, ...).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.ingest.routes import tracking_route

# Short path -> message type (None: a batch), as analytics.js names them.
PATHS = {"t": "track", "p": "page", "i": "identify", "b": None}
# The key is public and no cookie is read, so any page may call; Authorization and
# AnonymousId are the headers the RudderStack SDK sets (analytics.js sets none).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, AnonymousId",
    "Access-Control-Max-Age": "7200",  # Chromium's cap
}


async def preflight(request: Request) -> Response:
    return Response(status_code=204, headers=CORS_HEADERS)


def _with_cors(endpoint):
    async def browser_endpoint(request: Request) -> Response:
        response = await endpoint(request)  # error bodies carry code and message (routes.error)
        response.headers.update(CORS_HEADERS)
        return response

    browser_endpoint.__name__ = f"browser_{endpoint.__name__}"
    return browser_endpoint


def routes() -> list[Route]:
    out: list[Route] = []
    for path, kind in PATHS.items():
        out.append(Route(f"/v1/{path}", _with_cors(tracking_route(kind, trusted=False)), methods=["POST"]))
        out.append(Route(f"/v1/{path}", preflight, methods=["OPTIONS"]))
    return out
