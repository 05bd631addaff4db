"""The one way Stallwatch builds Slack Web API clients: base URL, token, timeout and retries.

slack_sdk retries only connection errors by default. The blocking client adds a 429 handler
that sleeps for Retry-After (once) and a server-error handler (twice, with backoff): right
for CLI commands and background jobs, wrong for anything that must answer within Slack's
3 seconds, and wrong for the outbox sender, which must never sleep on one channel's 429
while others wait; it gets `blocking_retries=False` and schedules its own retries.

An SDK-level retry of a request that may have reached Slack (a 5xx or a dropped connection)
can post twice; messages that must go out exactly once go through bot.slack.outbox.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.jitter import RandomJitter

from bot.settings import Settings

if TYPE_CHECKING:  # the async side needs aiohttp: imported only where used
    from slack_sdk.http_retry.async_handler import AsyncRetryHandler
    from slack_sdk.web.async_client import AsyncWebClient

DEFAULT_TIMEOUT = 10  # seconds per HTTP request; bounds how long an outbox claim can be held
SERVER_ERROR_RETRIES = 2
RATE_LIMIT_RETRIES = 1
BACKOFF_FACTOR = 0.5  # seconds before the first 5xx retry, doubled for the next


def _base_url(settings: Settings) -> str:
    url = settings.slack_api_url
    return url if url.endswith("/") else url + "/"  # slack_sdk joins method names onto it


class _Jitter(RandomJitter):
    """slack_sdk's random jitter (up to 1 s at the default factor), scaled with the factor."""

    def __init__(self, factor: float):
        self.scale = factor / BACKOFF_FACTOR

    def recalculate(self, duration: float) -> float:
        return duration + random.random() * self.scale


def _backoff(factor: float = BACKOFF_FACTOR) -> BackoffRetryIntervalCalculator:
    return BackoffRetryIntervalCalculator(backoff_factor=factor, jitter=_Jitter(factor))  # 0.5 s, 1 s (plus jitter)


def retry_handlers(backoff_factor: float = BACKOFF_FACTOR) -> list[RetryHandler]:
    return [
        ConnectionErrorRetryHandler(max_retry_count=1),
        RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES, interval_calculator=_backoff(backoff_factor)),
    ]


def async_retry_handlers() -> list[AsyncRetryHandler]:
    from slack_sdk.http_retry.builtin_async_handlers import (
        AsyncConnectionErrorRetryHandler,
        AsyncRateLimitErrorRetryHandler,
        AsyncServerErrorRetryHandler,
    )

    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=1),
        AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES, interval_calculator=_backoff()),
    ]


def web_client(settings: Settings, *, blocking_retries: bool = True, timeout: int = DEFAULT_TIMEOUT,
               backoff_factor: float = BACKOFF_FACTOR) -> WebClient:
    """A sync client. blocking_retries=False: no retry handler at all (an empty list, not
    slack_sdk's default), so every 429, 5xx and connection error reaches the caller at once.
    `backoff_factor` is a parameter for tests (the retries in milliseconds)."""
    return WebClient(
        token=settings.slack_bot_token,
        base_url=_base_url(settings),
        timeout=timeout,
        retry_handlers=retry_handlers(backoff_factor) if blocking_retries else [],
    )


def async_web_client(settings: Settings, *, timeout: int = DEFAULT_TIMEOUT) -> AsyncWebClient:
    """The async client for Bolt's AsyncApp listeners. Its 429 handler awaits Retry-After:
    it does not block the event loop, but ack() must come before any call through it."""
    from slack_sdk.web.async_client import AsyncWebClient

    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=_base_url(settings),
        timeout=timeout,
        retry_handlers=async_retry_handlers(),
    )
