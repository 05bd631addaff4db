"""The normalized shape every ingest source produces, and the errors they raise."""

from __future__ import annotations

from datetime import date
from typing import Any

# The shape the store takes is the store's own (storage never imports bot/); every source builds it.
from storage.records import IncomingEvent, TicketUpdate  # noqa: F401 - re-exported for the parsers


class BadRequest(Exception):
    """The body as a whole is unusable (not JSON, not a message): HTTP 400."""


class Unauthorized(Exception):
    """Missing or wrong signature or key: HTTP 401, nothing stored."""


class TooLarge(Exception):
    """Over the documented size limits: HTTP 413."""


class MessageError(ValueError):
    """One message of a batch is invalid; the others are still stored. Reported as
    `{"index": i, "error": str(exc)}`."""


def load_json(body: bytes) -> Any:
    """A JSON body (a UTF-8 byte-order mark tolerated); BadRequest when it is not JSON."""
    import orjson

    raw = bytes(body)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def parse_date(value: Any) -> date | None:
    """A renewal date from an ISO date or datetime string; None when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            raise MessageError(f"renewal_date {value!r} is not an ISO date (YYYY-MM-DD)") from None
    raise MessageError(f"renewal_date must be a string, got {type(value).__name__}")



MAX_DEPTH = 32  # nesting levels of a message: far past real use, far below the encoder's 254


def check_depth(value: Any, where: str) -> bytes:
    """MessageError when `value` nests objects or lists deeper than MAX_DEPTH levels (the
    JSON encoder would fail on it while storing, taking the batch's good messages along).
    Returns `orjson.dumps(value)`, which it makes anyway (segment's size check reuses it)."""
    import orjson

    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:  # for decoded JSON, only past the encoder's depth limit
        raise MessageError(f"{where} is nested deeper than {MAX_DEPTH} levels") from None
    if encoded.count(b"{") + encoded.count(b"[") <= MAX_DEPTH:
        return encoded  # the common case, decided at C speed: too few containers to nest that deep
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise MessageError(f"{where} is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return encoded

