"""A stand-in for Slack's Web API when there is no Slack: every call succeeds as Slack would
answer it. The demo (without a token) and the backtest give it to the real outbox sender, so
messages are "delivered" as they would be: pings get a ts, later edits of them find it, a
ping held by quiet hours waits for its time, one cancelled before it went out never goes."""

from __future__ import annotations

import itertools
from typing import Any


class SimulatedSlack:
    token = "simulated"  # no real token: it can never be revoked (the outbox asks)

    def __init__(self):
        self._n = itertools.count(1)
        self.calls = 0

    def _ts(self) -> str:
        self.calls += 1
        return f"1700000000.{next(self._n):06d}"

    def chat_postMessage(self, *, channel: str, **_: Any) -> dict:
        return {"ok": True, "channel": channel, "ts": self._ts()}

    def chat_update(self, *, channel: str, ts: str, **_: Any) -> dict:
        self.calls += 1
        return {"ok": True, "channel": channel, "ts": ts}

    def chat_postEphemeral(self, *, channel: str, **_: Any) -> dict:
        return {"ok": True, "message_ts": self._ts()}

    def conversations_open(self, *, users: str, **_: Any) -> dict:
        return {"ok": True, "channel": {"id": f"D{users}"}}

    def files_upload_v2(self, **_: Any) -> dict:
        return {"ok": True, "file": {"id": f"F{self._ts().replace('.', '')}"}}

    def views_publish(self, *, user_id: str, **_: Any) -> dict:
        return {"ok": True, "view": {"id": f"V{self._ts().replace('.', '')}"}}

    def users_lookupByEmail(self, *, email: str, **_: Any) -> dict:
        """Everyone is in this workspace: the user id is made from the email's name (stable, and
        readable where the demo prints a mention: maya.chen@... is UMAYACHEN)."""
        self.calls += 1
        name = "".join(c for c in email.split("@", 1)[0].upper() if c.isalnum())[:30] or "USER"
        return {"ok": True, "user": {"id": f"U{name}", "profile": {"email": email}}}

    def conversations_history(self, **_: Any) -> dict:
        return {"ok": True, "messages": [], "has_more": False}

    conversations_replies = conversations_history
