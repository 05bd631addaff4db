"""`assert_inert`: what Slack received must not let a customer's text mention anyone, make a
link or reorder text (issue 10).

It walks every string of a recorded request body (tests/fakes/slack_api.py keeps them whole)
and tells Stallwatch's own markup from a customer's: Stallwatch's mentions are `<@U…>` of the
Slack ids the test says are legitimate (`users`), its links start with the prefixes in
`links`, its dates are `<!date^…>` tokens. A customer's text is recognised by its markers:
the domains the hostile input carried (`markers`), which must never appear with a plain dot.
Anything else in angle brackets, a special mention (`<!here>`, `<!subteam^…>`), a plain
`@channel`/`@here`/`@everyone`, a bare `scheme:` and a bidi control fail wherever they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

# Strings Slack never renders: ids, button values, the modal's metadata, and the editable
# email in the draft modal (it is the customer's email, not Slack text).
NOT_RENDERED = frozenset({
    "token", "channel", "channel_id", "user", "user_id", "ts", "thread_ts", "trigger_id", "view_id", "value",
    "action_id", "block_id", "callback_id", "private_metadata", "initial_value", "metadata", "email",
    "content_b64", "filename", "external_id", "file_id", "files", "response_type", "hash", "id",
})

BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
SPECIAL_MENTION = re.compile(r"<!(?!date\^)[^>]*>")  # <!here>, <!channel>, <!everyone>, <!subteam^S1|x>
USER_MENTION = re.compile(r"<[@#]([^>|]*)(\|[^>]*)?>")
LINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>|]*)(\|[^>]*)?>", re.I)
DATE = re.compile(r"<!date\^\d+\^[^|>]*\|[^<>]*>")
WORD_MENTION = re.compile(r"(?<!\w)@(channel|here|everyone|group)\b", re.I)
SCHEME = re.compile(r"\b(https?|ftp|mailto|tel|slack):(?=[/\w])", re.I)


def strings(node: Any, key: str = "", path: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, key, string) of every string in a JSON-like value."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, str(k), f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, key, f"{path}/{i}")
    elif isinstance(node, str):
        yield path, key, node


def problems(payload: Any, *, markers: Iterable[str] = (), users: Iterable[str] = (),
             links: Iterable[str] = ()) -> list[str]:
    """Every way `payload` lets customer text act; [] when it is inert."""
    markers = [m.lower() for m in markers if m]
    users, links = set(users), tuple(links)
    found: list[str] = []
    for path, key, text in strings(payload):
        where = f"{path}: {text[:200]!r}"
        if key == "url":  # a button's link: Stallwatch's own pages only
            if not text.startswith(links) or any(m in text.lower() for m in markers):
                found.append(f"foreign url at {where}")
            continue
        if key in NOT_RENDERED:
            continue
        if BIDI.search(text):
            found.append(f"bidi control at {where}")
        own = DATE.sub("", text)
        for m in SPECIAL_MENTION.finditer(own):
            found.append(f"special mention {m.group(0)!r} at {where}")
        for m in USER_MENTION.finditer(own):
            if m.group(1) not in users:
                found.append(f"mention {m.group(0)!r} at {where}")
        for m in LINK.finditer(own):
            if not m.group(1).startswith(links):  # (no prefix given: every link is foreign)
                found.append(f"link {m.group(0)!r} at {where}")
        bare = LINK.sub("", own)
        if WORD_MENTION.search(bare):
            found.append(f"@-mention word at {where}")
        if SCHEME.search(bare):
            found.append(f"bare URL scheme at {where}")
        found += [f"auto-linkable {m!r} at {where}" for m in markers if m in text.lower()]
    return found


def assert_inert(payload: Any, *, markers: Iterable[str] = (), users: Iterable[str] = (),
                 links: Iterable[str] = ()) -> None:
    """Fail with every problem found in a Slack request body (see the module docstring)."""
    found = problems(payload, markers=markers, users=users, links=links)
    assert not found, "\n".join(found[:20])


def assert_all_inert(calls, **kw) -> int:
    """`assert_inert` over every recorded call's body; returns how many bodies were checked."""
    for call in calls:
        found = problems(call.body, **kw)
        assert not found, f"{call.method}:\n" + "\n".join(found[:20])
    return len(calls)
