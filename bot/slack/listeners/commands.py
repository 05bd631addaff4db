"""Slash commands: /journey, /stalls, /funnel.

Each command acks at once (usage help goes straight into the ack when the input is empty or
unknown) and answers ephemerally from a lazy listener through `response_url`.

What a user sees follows the one visibility rule (Op.VIEW, bot/stalls/permissions.py): the CS
team and admins see every account; anyone else only the accounts they own or are assigned
(`/journey` of another account is refused, `/stalls all` lists their own and says so).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, PlainTextObject, SectionBlock, MarkdownTextObject

from bot.slack.render import funnel_blocks, journey_blocks, stalls_list_blocks
from bot.slack.render.limits import MAX_BLOCKS
from bot.slack.render.primitives import context_block
from bot.slack.text import md, plain
from bot.slack.boundary import ack_only, lazy
from bot.stalls import actions, reads
from bot.stalls.context import Services
from storage.lookup import find_account

JOURNEY_PICK = "journey_pick"  # "did you mean" buttons: journey_pick:<n>, value = account id
JOURNEY_PICK_RE = re.compile(rf"^{JOURNEY_PICK}:\d+$")

JOURNEY_USAGE = ("*Usage:* `/journey <account name, domain or id>`, e.g. `/journey acme` or "
                 "`/journey acme.com`: the account's stage, step checklist, open stalls and recent history.")
STALLS_USAGE = ("*Usage:* `/stalls [mine|all] [p0|p1|p2|p3]`, e.g. `/stalls`, `/stalls all p0`, "
                "`/stalls mine p0 p1`. `mine` (the default) is the stalls of accounts you own or "
                "that are assigned to you; `all` is every account's for the CS team and admins.")
ONLY_YOURS = ("You see only the accounts you own or are assigned: the CS team (STALLWATCH_TEAM) and "
              "Stallwatch admins see all.")
FUNNEL_USAGE = "*Usage:* `/funnel [days]`, e.g. `/funnel` (last 30 days) or `/funnel 90` (1 to 365 days)."
DEFAULT_FUNNEL_DAYS = 30
MAX_FUNNEL_DAYS = 365


def _blocks(blocks) -> list[dict]:
    return [b.to_dict() if hasattr(b, "to_dict") else b for b in blocks]


# --- parsing (pure) -------------------------------------------------------------------------

@dataclass(frozen=True)
class StallsQuery:
    mine: bool = True
    priorities: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        scope = "mine" if self.mine else "all"
        return " · ".join([scope, *self.priorities]) if self.priorities else scope


def parse_stalls(text: str) -> StallsQuery | None:
    """`/stalls` arguments, or None when a word is not understood."""
    mine, priorities = True, []
    for word in text.lower().split():
        if word in ("mine", "me", "my"):
            mine = True
        elif word in ("all", "everyone", "team"):
            mine = False
        elif word in ("p0", "p1", "p2", "p3"):
            if word.upper() not in priorities:
                priorities.append(word.upper())
        else:
            return None
    return StallsQuery(mine, tuple(sorted(priorities)))


def parse_funnel(text: str) -> int | None:
    text = text.strip().lower()
    if not text:
        return DEFAULT_FUNNEL_DAYS
    m = re.fullmatch(r"(\d{1,4})\s*(d|days?)?", text)
    if m and 1 <= int(m.group(1)) <= MAX_FUNNEL_DAYS:
        return int(m.group(1))
    return None


# --- answers (blocking: run in a thread) ------------------------------------------------------

def journey_answer(services: Services, query: str, user: str) -> dict:
    """The /journey message for what was typed: the journey, "did you mean" (among the
    accounts `user` may see), or "no match". NotAllowed for an account the user may not see."""
    found = find_account(services.engine, query)
    if found.exact is not None:
        return account_journey(services, found.exact.id, user)
    visible = set(actions.visible_accounts(services, [s.id for s in found.suggestions], user))
    suggestions = [s for s in found.suggestions if s.id in visible]
    if suggestions:
        return did_you_mean(query, suggestions)
    return {"text": f"No account matches “{md(query, 100)}”.",
            "blocks": [SectionBlock(text=MarkdownTextObject(
                text=f"No account matches *{md(query, 100)}*.\n{JOURNEY_USAGE}")).to_dict()]}


def account_journey(services: Services, account_id: str, user: str) -> dict:
    """The journey of the account, once `user` may see it (NotAllowed otherwise)."""
    actions.view_account(services, account_id, user)
    with services.engine.connect() as conn:
        data = reads.journey_data(conn, account_id, services.rules, services.clock())
    if data is None:
        return {"text": "That account no longer exists."}
    return {"text": f"Journey of {md(data.name or data.account_id, 120)}", "blocks": _blocks(journey_blocks(data))}


def did_you_mean(query: str, suggestions) -> dict:
    lines = [f"• *{md(s.name, 100)}*" + (f" · {md(s.domain, 100)}" if s.domain else "") + f" · `{md(s.id, 100)}`"
             for s in suggestions[:5]]
    buttons = [ButtonElement(text=PlainTextObject(text=plain(s.name or s.id, 75)), action_id=f"{JOURNEY_PICK}:{i}",
                             value=s.id[:2000]) for i, s in enumerate(suggestions[:5])]
    blocks = [
        SectionBlock(text=MarkdownTextObject(
            text=f"No exact match for *{md(query, 100)}*. Did you mean:\n" + "\n".join(lines))),
        ActionsBlock(elements=buttons, block_id="journey-did-you-mean"),
    ]
    names = ", ".join(md(s.name or s.id, 100) for s in suggestions[:5])
    return {"text": f"No exact match for “{md(query, 100)}”. Did you mean: {names}?",
            "blocks": _blocks(blocks)}


def stalls_answer(services: Services, q: StallsQuery, user_id: str) -> dict:
    only_yours = not q.mine and not actions.sees_every_account(services, user_id)
    with services.engine.connect() as conn:
        rows, total = reads.stall_rows(conn, services.clock(), user=user_id if q.mine or only_yours else None,
                                         priorities=q.priorities, limit=40, rules=services.rules)
    blocks = _blocks(stalls_list_blocks(rows, q.label, more=max(total - len(rows), 0)))
    if only_yours and len(blocks) < MAX_BLOCKS:
        blocks.insert(1, context_block(ONLY_YOURS).to_dict())
    return {"text": f"{total} accounts with live stalls ({q.label})", "blocks": blocks}


def funnel_answer(services: Services, days: int) -> dict:
    with services.engine.connect() as conn:
        data = reads.funnel_data(conn, services.rules, services.clock(), days)
    return {"text": f"Funnel, last {days} days", "blocks": _blocks(funnel_blocks(data))}


# --- listeners --------------------------------------------------------------------------------

async def ack_journey(ack, command):
    text = (command.get("text") or "").strip()
    await ack(response_type="ephemeral", text=JOURNEY_USAGE) if not text else await ack()


async def journey(services: Services, body, respond, context):
    text = (body.get("text") or "").strip()
    if text:
        await respond(response_type="ephemeral",
                      **await asyncio.to_thread(journey_answer, services, text, context["user_id"]))


async def ack_stalls(ack, command):
    q = parse_stalls(command.get("text") or "")
    await ack(response_type="ephemeral", text=STALLS_USAGE) if q is None else await ack()


async def stalls(services: Services, body, respond, context):
    q = parse_stalls(body.get("text") or "")
    if q is not None:
        await respond(response_type="ephemeral",
                      **await asyncio.to_thread(stalls_answer, services, q, context["user_id"]))


async def ack_funnel(ack, command):
    days = parse_funnel(command.get("text") or "")
    await ack(response_type="ephemeral", text=FUNNEL_USAGE) if days is None else await ack()


async def funnel(services: Services, body, respond):
    days = parse_funnel(body.get("text") or "")
    if days is not None:
        await respond(response_type="ephemeral", **await asyncio.to_thread(funnel_answer, services, days))


async def journey_pick(services: Services, body, respond, context):
    account_id = body["actions"][0].get("value") or ""
    await respond(response_type="ephemeral", replace_original=True,
                  **await asyncio.to_thread(account_journey, services, account_id, context["user_id"]))


def register(app: AsyncApp, services: Services) -> None:
    app.command("/journey")(ack=ack_journey, lazy=[lazy(services, journey)])
    app.command("/stalls")(ack=ack_stalls, lazy=[lazy(services, stalls)])
    app.command("/funnel")(ack=ack_funnel, lazy=[lazy(services, funnel)])
    app.action(JOURNEY_PICK_RE)(ack=ack_only, lazy=[lazy(services, journey_pick)])
