"""Whether Slack can be posted to: a revoked token, and channels the bot is not in.

- Revoked: Slack's `app_uninstalled` and `tokens_revoked` events, or a post answered
  token_revoked / invalid_auth / account_inactive, mark the token revoked (in the database,
  so every process and /healthz see it). While it is, the outbox sender posts nothing and
  its rows wait (none fails). The mark names the token by a fingerprint: a process started
  with a new token is not held by the old one's mark. At start (`check_at_start`), a token
  that passes auth.test clears its mark and posting resumes.
- Channels: at start, conversations.info says whether the bot is a member of each
  configured channel. Without membership the lost-post lookup (conversations.history)
  fails, and in a private channel, posting too: a warning says whom to invite, and /healthz
  shows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import Engine

from storage.db import utcnow
from storage.meta import get_meta, set_meta

log = logging.getLogger("stallwatch.slack")

REVOKED_KEY = "slack_token_revoked"
CHANNELS_KEY = "slack_channels"
# Slack errors meaning this token will not work again (missing_scope is fixable in place: retried).
REVOKED_ERRORS = frozenset({"token_revoked", "invalid_auth", "account_inactive", "not_authed", "token_expired"})
CHANNEL_SETTINGS = (("STALLWATCH_ALERTS_CHANNEL", "alerts_channel"), ("STALLWATCH_DIGEST_CHANNEL", "digest_channel"),
                    ("STALLWATCH_OPS_CHANNEL", "ops_channel_setting"))


def fingerprint(token: str | None) -> str:
    return hashlib.sha256((token or "").encode()).hexdigest()[:12]


def mark_revoked(engine: Engine, token: str | None, why: str, at: datetime | None = None) -> None:
    at = at or utcnow()
    set_meta(engine, REVOKED_KEY, json.dumps({"token": fingerprint(token), "at": at.isoformat(timespec="seconds"),
                                              "why": why}))
    log.error("Slack token revoked at %s (%s): Stallwatch posts nothing to Slack; messages wait in the outbox. "
              "Reinstall the app, set the new SLACK_BOT_TOKEN and restart to resume.",
              at.isoformat(timespec="seconds"), why)


def revoked(engine: Engine, token: str | None) -> dict | None:
    """The revocation mark of this token ({"at", "why"}), or None while it is usable."""
    raw = get_meta(engine, REVOKED_KEY)
    if not raw:
        return None
    mark = json.loads(raw)
    return mark if mark.get("token") == fingerprint(token) else None


def clear_revoked(engine: Engine, token: str | None) -> None:
    if revoked(engine, token) is not None:
        set_meta(engine, REVOKED_KEY, "")
        log.warning("Slack token works again (auth.test passed): posting resumes")


def check_at_start(engine: Engine, settings, client: WebClient) -> None:
    """auth.test (clears or sets the revocation mark), then membership of each configured
    channel (conversations.info), logged and kept for /healthz. Never raises: Slack being
    away at start must not stop the server."""
    try:
        client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if error in REVOKED_ERRORS:
            mark_revoked(engine, client.token, f"auth.test at start: {error}")
        else:
            log.warning("Slack auth.test failed at start: %s", error or exc)
        return
    except Exception as exc:  # noqa: BLE001 - Slack unreachable: checked again at the next start
        log.warning("Slack auth.test failed at start: %s", exc)
        return
    clear_revoked(engine, client.token)
    set_meta(engine, CHANNELS_KEY, json.dumps(_channel_states(settings, client)))


def _channel_states(settings, client: WebClient) -> dict[str, str]:
    states: dict[str, str] = {}
    for variable, attribute in CHANNEL_SETTINGS:
        channel = getattr(settings, attribute, None)
        if not channel or channel in states:
            continue
        try:
            info = client.conversations_info(channel=channel)["channel"]
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else str(exc)
            states[channel] = f"cannot check: {error}"
            log.warning("cannot check the Slack channel %s (%s): %s", channel, variable, error)
            continue
        except Exception as exc:  # noqa: BLE001 - Slack unreachable: not known, not fatal
            states[channel] = f"cannot check: {type(exc).__name__}"
            continue
        if info.get("is_member"):
            states[channel] = "ok"
        else:
            name = info.get("name") or channel
            states[channel] = f"not a member: invite @Stallwatch to #{name}"
            log.warning("invite @Stallwatch to #%s (%s, %s): it cannot look up its own posts there%s",
                        name, channel, variable, " nor post" if info.get("is_private") else "")
    return states


def health(engine: Engine, settings) -> dict:
    """What /healthz says about Slack: {"slack": ..., "slack_channels": {...}} (the latter when checked)."""
    if not settings.slack_enabled:
        return {"slack": "not configured"}
    mark = revoked(engine, settings.slack_bot_token)
    body: dict = {"slack": f"token revoked at {mark['at']} ({mark['why']})" if mark else "configured"}
    channels = get_meta(engine, CHANNELS_KEY)
    if channels:
        body["slack_channels"] = json.loads(channels)
    return body
