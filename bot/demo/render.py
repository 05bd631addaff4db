"""Slack messages in a terminal: Block Kit made readable, and Block Kit Builder links.

Renders what Slack would show (headers, sections, fields side by side, context lines,
buttons and menus) from the message payloads Stallwatch stores in its outbox, with
Slack's mrkdwn turned into terminal styles (bold, italics) and its entities (`<url|label>`,
`<@U123>`, date tokens, `&amp;`) into plain text.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Callable, Iterable
from urllib.parse import quote

import click

BUILDER_URL = "https://app.slack.com/block-kit-builder#"
WIDTH = 92

_ZWSP = "\u200b"
_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<([^<>|]+)\|([^<>]*)>")
_BARE = re.compile(r"<([^<>|]+)>")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")


def builder_link(blocks: list[dict]) -> str:
    """A Block Kit Builder link that opens the message (the JSON travels in the fragment)."""
    return BUILDER_URL + quote(json.dumps({"blocks": blocks}, separators=(",", ":"), ensure_ascii=False), safe="")


def mrkdwn(text: str, color: bool = True) -> str:
    """Slack mrkdwn as terminal text."""
    text = _DATE.sub(lambda m: m.group(1), text or "")

    def entity(m: re.Match) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith(("@", "#")):
            return label or target
        return f"{label} ({target})" if label and label != target else target

    text = _LINK.sub(entity, text)
    text = _BARE.sub(lambda m: m.group(1) if m.group(1).startswith(("@", "#")) else
                     m.group(1).removeprefix("!"), text)
    if color:
        text = _BOLD.sub(lambda m: click.style(m.group(1), bold=True), text)
        text = _ITALIC.sub(lambda m: click.style(m.group(1), italic=True), text)
    else:
        text = _BOLD.sub(lambda m: m.group(1), text)
        text = _ITALIC.sub(lambda m: m.group(1), text)
    text = text.replace(_ZWSP, "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _plain(obj: Any) -> str:
    return obj.get("text", "") if isinstance(obj, dict) else ""


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(textwrap.wrap(line, width=width, initial_indent=indent, subsequent_indent=indent,
                                 break_long_words=False, break_on_hyphens=False) or [indent.rstrip()])
    return out


def _visible(text: str) -> int:
    return len(click.unstyle(text))


def _element(el: dict, color: bool) -> str:
    kind = el.get("type")
    if kind == "button":
        label = f"[ {_plain(el.get('text'))} ]"
        style = el.get("style")
        if color and style == "primary":
            return click.style(label, fg="green", bold=True)
        if color and style == "danger":
            return click.style(label, fg="red")
        return label
    if kind in ("static_select", "overflow", "users_select", "multi_static_select"):
        if kind == "overflow":
            return "[ ⋯ ]"
        return f"[ {_plain(el.get('placeholder')) or 'Choose…'} ▾ ]"
    if kind in ("mrkdwn", "plain_text"):
        return mrkdwn(el.get("text", ""), color) if kind == "mrkdwn" else el.get("text", "")
    if kind == "image":
        return f"[image: {el.get('alt_text', '')}]"
    return f"[{kind}]"


def render_blocks(blocks: Iterable[dict], *, color: bool = True, width: int = WIDTH) -> list[str]:
    """Lines of text for a list of Block Kit blocks (dicts)."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            title = _plain(block.get("text"))
            lines.append(click.style(title, bold=True) if color else title)
        elif kind == "section":
            if isinstance(block.get("text"), dict):
                text = block["text"]
                body = mrkdwn(text.get("text", ""), color) if text.get("type") == "mrkdwn" else text.get("text", "")
                lines.extend(_wrap(body, width))
            fields = [mrkdwn(f.get("text", ""), color).replace("\n", ": ", 1) for f in block.get("fields") or []]
            for i in range(0, len(fields), 2):
                pair = fields[i:i + 2]
                left = pair[0]
                if len(pair) == 2 and _visible(left) < width // 2 - 2:
                    lines.append("  " + left + " " * (width // 2 - _visible(left)) + pair[1])
                else:
                    lines.extend("  " + f for f in pair)
            accessory = block.get("accessory")
            if isinstance(accessory, dict):
                lines.append("  " + _element(accessory, color))
        elif kind == "context":
            text = " · ".join(_element(el, color) for el in block.get("elements") or [] if _element(el, False).strip())
            for line in _wrap(click.unstyle(text) if not color else text, width):
                lines.append(click.style(line, dim=True) if color else line)
        elif kind == "actions":
            lines.append(" ".join(_element(el, color) for el in block.get("elements") or []))
        elif kind == "divider":
            lines.append("─" * min(width, 40))
        elif kind == "image":
            lines.append(f"[image: {block.get('alt_text', '')}]")
        else:
            lines.append(f"[{kind} block]")
    return lines


def render_message(title: str, payload: dict, *, color: bool = True, width: int = WIDTH,
                   style: Callable[[str], str] | None = None) -> str:
    """One message in a frame: `title` (where it goes) on top, the blocks (or the text) inside."""
    blocks = payload.get("blocks")
    if blocks:
        body = render_blocks(blocks, color=color, width=width - 2)
    else:
        body = _wrap(mrkdwn(payload.get("text", ""), color), width - 2)
    top = f"┌─ {title} "
    top += "─" * max(width - _visible(top), 3)
    out = [click.style(top, fg="cyan") if color else top]
    bar = click.style("│", fg="cyan") if color else "│"
    out.extend(f"{bar} {line}" if line else bar for line in body)
    bottom = "└" + "─" * (width - 1)
    out.append(click.style(bottom, fg="cyan") if color else bottom)
    return "\n".join(out)
