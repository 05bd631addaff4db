"""The one place where customer-controlled text is made safe for Slack.

Account names, contact names, ticket subjects, trait values, an SMTP server's error text, a
model's output: anything Stallwatch did not write itself goes through `md` (mrkdwn text
objects and the notification `text` of chat.postMessage/chat.update, which Slack renders as
mrkdwn too) or `plain` (plain_text objects: headers, button labels, chart titles) exactly
once, at the point where it is put into a message. Stallwatch's own markup (`<@U…>` built from
stored Slack ids, `<!date^…>` tokens, `<url|label>` links to its own pages) is added around the
escaped text, never through these functions.

What a customer's text can no longer do once it went through them:
- mention anyone: `<`, `>` and `&` become entities (Slack's documented escapes), so `<!here>`,
  `<@U123>` and `<!subteam^…>` are shown as typed; the plain words `@here`, `@channel`,
  `@everyone` (and any `@name` or `#channel` Slack would parse with link_names) get an
  invisible WORD JOINER after the `@`/`#`, which no mention or channel name can contain;
- make a link: `<url|label>` is escaped as above; a bare URL or domain (`evil.example.com`,
  `www.x.zip`, `https://localhost`, `a@b.co` for mailto) is auto-linked by Slack, so a WORD
  JOINER (U+2060) goes after every dot that sits between a word character and a letter and
  after the `:` of a scheme. Why Slack cannot link that: an auto-linked domain needs a label, a
  dot, then a top-level domain made of letters; U+2060 is a format character (Unicode Cf),
  never a letter, digit or hyphen, so after the change no dot is directly followed by a
  label and no `scheme://` is left. The text still reads the same (the joiner has no width
  and, unlike a zero-width space, adds no line break inside the domain), and a copy of it
  pasted in a browser is not a working address either (IDNA rejects the joiner);
- format: `*`, `_`, `~` and `` ` `` are fenced with zero-width spaces (Slack has no escape for
  them), so they can neither open nor close bold/italic/strike/code;
- reorder or hide text: bidi controls (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C)
  and every other control or format character are dropped, except the newline (kept where
  the text may span lines) and the zero-width joiner of emoji sequences (👩‍💻).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

ZWSP = "\u200b"  # fences formatting characters
WJ = "\u2060"  # WORD JOINER: breaks links and mentions (see the module docstring)
_ZWJ = "\u200d"  # joins emoji sequences: the one format character a customer's text keeps

# Slack has no escape for *, _, ~ and `: fencing each with zero-width spaces leaves it with no
# word boundary-free side, so it can neither open nor close bold/italic/strike/code.
_MRKDWN_ESCAPES = str.maketrans({
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    **{c: f"{ZWSP}{c}{ZWSP}" for c in "*_~`"},
})

# A dot (or a full-width/ideographic one, which some linkifiers accept too) between a word
# character and a letter: the dot before every domain label that can be a top-level domain
# (all of them start with a letter), while numbers such as "x 1.3" or "$2.5k" stay as they are.
_DOMAIN_DOT = re.compile(r"(?<=[\w\u200d])([.．｡。])(?=[^\W\d_])")  # (IDNA lets a ZWJ end a label)
# The ':' of a scheme: https://x, mailto:a@b, tel:123 (also "note:x", where the joiner is harmless).
_SCHEME = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*:)(?=[/\w])")
_MENTION = re.compile(r"(?<!\w)([@#])(?=\w)")  # @here, @channel, @everyone, @jane, #general


@functools.cache
def _invisible() -> dict[int, None]:
    """Every control and format character (Cc, Cf, Cs, Zl, Zp) but the newline and the ZWJ, as
    a str.translate table that deletes them: one C-speed pass instead of a Python loop per
    character (names and ticket text can be long). Built once, on first use (~0.15 s)."""
    return {c: None for c in range(sys.maxunicode + 1)
            if c not in (0x0A, 0x200D) and unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp")}


# A ZWJ that does not follow a non-ASCII character (an emoji) joins nothing visible: dropped.
_STRAY_ZWJ = re.compile(r"(?:(?<=[\x00-\x7f])|^)\u200d+")


def clean(text: str | None) -> str:
    """The text without control and format characters (bidi controls included): what is
    left cannot reorder or hide anything. Tabs become spaces, CR and line separators newlines.
    The zero-width joiner survives only inside an emoji sequence (after a non-ASCII character)."""
    text = (text or "").replace("\t", " ").replace("\u2028", "\n").replace("\u2029", "\n").replace("\r", "\n")
    return _STRAY_ZWJ.sub("", text.translate(_invisible()))


def defang(text: str) -> str:
    """Clean text with its links and mentions broken by an invisible WORD JOINER."""
    text = _DOMAIN_DOT.sub(rf"\1{WJ}", text)
    text = _SCHEME.sub(rf"\1{WJ}", text)
    return _MENTION.sub(rf"\1{WJ}", text)


def escape(text: str | None) -> str:
    """Customer text made inert in mrkdwn: no mentions, links, formatting or bidi tricks."""
    return defang(clean(text)).translate(_MRKDWN_ESCAPES)


def oneline(text: str | None) -> str:
    # Names and why lines are single-line facts; a newline in one would break the layout.
    return " ".join(clean(text).split())


def clip(text: str, limit: int) -> str:
    """Text clipped to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def md(text: str | None, limit: int, *, single_line: bool = True) -> str:
    """Escaped mrkdwn of customer text, at most `limit` characters. The raw text is clipped,
    not the escaped one, so no entity or formatting guard is ever cut in half."""
    raw = oneline(text) if single_line else clean(text)
    # Escaping never shortens clean text: past limit + 1 characters the rest is cut anyway.
    raw = raw[: limit + 1]
    out = escape(raw)
    if len(out) <= limit:
        return out
    keep = min(len(raw), limit - 1)
    while keep > 0:
        cut = escape(raw[:keep])
        if len(cut) < limit:
            return cut + "…"
        keep -= max(1, (len(cut) + 1 - limit) // 5)  # an escape adds at most 4 characters
    return "…"


def plain(text: str | None, limit: int, *, empty: str = "-") -> str:
    """Customer text for a plain_text object (a header, a button label, a chart title).
    plain_text shows `<`, `&` and `*` literally and does not parse mentions, but Slack still
    auto-links URLs in it, so links and mention words are broken (no entities); a joiner
    after each `<` keeps even a literal `<!here>` from ever reading as Slack markup."""
    raw = oneline(text)
    out = _plain_defang(raw)
    while len(out) > limit and raw:  # clip the raw text, so a joiner is never left dangling
        raw = raw[: len(raw) - max(1, len(out) - limit + 1)]
        out = _plain_defang(raw) + "…"
    return out or empty


def _plain_defang(text: str) -> str:
    return defang(text).replace("<", f"<{WJ}")
