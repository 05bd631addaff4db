"""Block Kit for every Stallwatch surface, one module each: the ping (ping.py), the managers'
escalations and win-back handoffs (escalation.py), /stalls and the App Home (stalls.py), /journey
(journey.py), /funnel (funnel.py) and the daily digest (digest.py); beside them the action codec
(codec.py), Block Kit primitives (primitives.py), value formatting (format.py) and the packing of
blocks under Slack's limits (packing.py, limits.py).

Renderers are pure functions from the read models of bot/stalls/views.py to `slack_sdk.models`
blocks (or a `View`), so Slack's limits are checked when a message is built, not when Slack
rejects it. Messages are rendered from state (Grafana OnCall's lesson): the buttons depend on
the stall's current status, and re-rendering after any change gives the whole new message.

Safety rules every renderer follows:
- customer text (account names, why lines, ticket subjects...) goes through `md` (mrkdwn)
  or `plain` (plain_text) of bot/slack/text.py exactly once: no mentions, links, formatting
  or bidi controls survive, and it is clipped to a fixed size without cutting an escape;
- multi-line sections are built from whole lines up to Slack's limit ("…and N more");
- every message passes `check_message` (50 blocks, ~12,000 characters of text); lists that
  would not fit end with "and N more" instead of failing.

This package exports its renderers; the codec, primitives and limits are imported from their
modules.
"""

from bot.slack.render.digest import digest_messages, digest_text, tracking_summary
from bot.slack.render.backlog import backlog_blocks, backlog_text
from bot.slack.render.escalation import (escalation_blocks, escalation_summary_blocks, escalation_text,
                                         followup_note, winback_blocks, winback_text)
from bot.slack.render.funnel import funnel_blocks
from bot.slack.render.journey import journey_blocks
from bot.slack.render.ping import news_text, ping_blocks, ping_text, priority_change_text
from bot.slack.render.stalls import home_view, stalls_list_blocks

__all__ = [
    "backlog_blocks", "backlog_text",
    "digest_messages", "digest_text", "tracking_summary", "escalation_blocks", "escalation_summary_blocks",
    "escalation_text", "followup_note", "winback_blocks", "winback_text", "funnel_blocks", "journey_blocks",
    "news_text", "ping_blocks", "ping_text", "priority_change_text", "home_view", "stalls_list_blocks",
]
