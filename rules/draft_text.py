"""Recovery email text: the facts a draft is written from, the built-in template, and the checks
every draft passes before it can reach a customer (issue 4). Pure: no I/O, no clock.

- `DraftFacts`: what we know about the account, read by bot.drafting.facts; customer-written
  text (ticket subjects and bodies) is kept apart in `tickets` and never put into the template.
- `template_draft`: a short, human email per stall rule; used when there is no LLM, when the
  LLM fails, and when its draft fails the checks.
- `check_draft`: problems that must block any draft, the CSM's edited one included (empty
  fields, length limits, leftover placeholders, links other than the configured ones).
- `check_model_draft`: `check_draft` plus what only a model's draft is held to, default-deny
  (issue 10): no link, host or IP but the configured links, however obfuscated; no email
  address but the CSM's own; no phone number; no offers, no requests for secrets or payment
  details, no phishing pressure; no internal jargon, echoes of the prompt or of the
  customer's text; a word limit. A prompt injection in a ticket that the model obeyed shows
  up here, and the CSM gets the template instead.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, NamedTuple, Sequence
from urllib.parse import urlsplit

SUBJECT_MAX = 150
BODY_MAX = 3000
MODEL_BODY_MAX_WORDS = 220  # the prompt asks for at most 120; a model far past it ignored the prompt
DEFAULT_SIGNOFF = "The Customer Success team"
CLOSED_TICKET = ("solved", "closed", "resolved")


class DraftTicket(NamedTuple):
    """A recent ticket of the account. `subject` and `body` are written by the customer:
    untrusted data, quoted to the model, never copied into a template."""

    topic: str | None
    subject: str | None
    body: str | None
    status: str
    created_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return (self.status or "").strip().lower() not in CLOSED_TICKET


@dataclass(frozen=True)
class DraftFacts:
    account_name: str
    track: str  # high_touch | standard | self_serve
    stage: str  # journey stage
    plan: str | None
    arr: float
    contact_first_name: str | None
    recipient_email: str | None
    recipient_contact_id: str | None
    steps_done: tuple[tuple[str, datetime | None], ...] = ()  # (display name, done at), journey order
    steps_missing: tuple[str, ...] = ()  # display names, journey order
    stalled_step: str | None = None  # display name of the step the stall is on
    rule: str = ""  # the stall rule: step_stall, not_activated, ticket_spike, usage_drop, ...
    detail: str = ""  # the stall's detail line ("5 days on 'Connect integration'")
    days_stalled: float = 0.0
    last_seen_at: datetime | None = None
    tickets: tuple[DraftTicket, ...] = ()
    csm_name: str | None = None
    help_url: str = ""
    booking_url: str = ""
    attempt: int = 1  # which recovery email of the stall this is
    now: datetime | None = None  # when the facts were read (for "3 days ago" in the prompt)
    stall_id: int | None = None
    signoff_team: str = DEFAULT_SIGNOFF
    # The CSM's own addresses (the account owner's, the From address): the only email
    # addresses a model's draft may show (a signature). No phone number is configured.
    own_emails: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists from callers; keep the dataclass hashable and immutable.
        object.__setattr__(self, "steps_done", tuple(tuple(s) for s in self.steps_done))
        object.__setattr__(self, "steps_missing", tuple(self.steps_missing))
        object.__setattr__(self, "tickets", tuple(DraftTicket(*t) for t in self.tickets))
        object.__setattr__(self, "own_emails", tuple(e for e in self.own_emails if e))

    @property
    def allowed_urls(self) -> list[str]:
        return [u.strip() for u in (self.help_url, self.booking_url) if u and u.strip()]

    @property
    def ticket_topics(self) -> list[str]:
        """Distinct ticket topics, most frequent first (ties: first seen)."""
        counts: dict[str, int] = {}
        labels: dict[str, str] = {}
        for t in self.tickets:
            label = (t.topic or "").strip()
            if label:
                key = label.casefold()
                counts[key] = counts.get(key, 0) + 1
                labels.setdefault(key, label)
        order = sorted(counts, key=lambda k: -counts[k])
        return [labels[k] for k in order]


@dataclass(frozen=True)
class DraftText:
    subject: str
    body: str


# --- detecting links and placeholders ---------------------------------------------------------

# Anything with a scheme ("https://", "ftp://", "hxxp://"), "www." hosts, and bare host names
# followed by a path: what mail clients turn into links. mailto: is reported on its own.
_SCHEME_URL = re.compile(r"\b[a-z][a-z0-9+.\-]{1,15}://\S*", re.IGNORECASE)
_MAILTO = re.compile(r"\bmailto:\S*", re.IGNORECASE)
_WWW = re.compile(r"\bwww\d{0,3}\.[\w\-]+(?:\.[\w\-]+)*\S*", re.IGNORECASE)
_DOMAIN_PATH = re.compile(r"(?<!\w\.)\b(?:[\w](?:[\w\-]{0,61}[\w])?\.)+[^\W\d_]{2,63}(?::\d{1,5})?/\S*")
_TRAILING = ".,;:!?)]}>'\"»”’*"

_PLACEHOLDERS = [
    re.compile(r"\{\{[^{}]{0,80}\}\}"),  # {{first_name}}
    re.compile(r"\{[^{}\n]{0,80}\}"),  # {name}, {}
    re.compile(r"\[[^\[\]\d\n]{0,40}[^\W\d_][^\[\]\d\n]{0,40}\]"),  # [Name], [Company], [insert date]; not [#123]
    re.compile(r"<\s*[^\W\d_][\w .'\-]{0,38}>"),  # <first name>, <Company> (not <jane@x.com>)
    re.compile(r"\bX{3,}\b"),  # XXX
    re.compile(r"\b(?:TODO|TBD|FIXME)\b"),
    re.compile(r"\blorem ipsum\b", re.IGNORECASE),
    re.compile(r"__[A-Za-z][A-Za-z_]{1,40}__"),  # __NAME__
    re.compile(r"%\([A-Za-z_]{1,40}\)[sd]"),  # %(name)s
    re.compile(r"\$[A-Z][A-Z_]{2,40}\b"),  # $FIRST_NAME
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _strip_trailing(url: str) -> str:
    while url and url[-1] in _TRAILING:
        url = url[:-1]
    return url


def _normalize(url: str, *, strip: bool = True) -> str:
    """Scheme and host case-folded, no trailing slash (nor, with `strip`, trailing punctuation)."""
    url = url.strip()
    if strip:
        url = _strip_trailing(url)
    parts = urlsplit(url if "://" in url else "//" + url)
    out = (parts.netloc or "").lower() + parts.path.rstrip("/")
    if parts.query:
        out += "?" + parts.query
    if parts.fragment:
        out += "#" + parts.fragment
    return f"{parts.scheme.lower()}://{out}" if parts.scheme else out


def _allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether `url` (as found in the text) is exactly one of the allowed URLs. A scheme-less
    form ("www.help.example/start") matches an allowed URL that is the same but for it."""
    candidates = {_normalize(url), _normalize(url, strip=False)}
    targets = {_normalize(a, strip=False) for a in allowed if a and a.strip()}
    if "://" not in url:
        targets |= {t.split("://", 1)[1] for t in targets if "://" in t}
    return bool(candidates & targets)


def find_links(text: str) -> list[tuple[str, str]]:
    """Every link-like thing in `text`, as (kind, text): kind is "url" or "mailto"."""
    found: list[tuple[int, int, str, str]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for kind, pattern in (("mailto", _MAILTO), ("url", _SCHEME_URL), ("url", _WWW), ("url", _DOMAIN_PATH)):
        for m in pattern.finditer(text):
            if free(m.start(), m.end()):
                taken.append((m.start(), m.end()))
                found.append((m.start(), m.end(), kind, m.group(0)))
    found.sort()
    return [(kind, value) for _, _, kind, value in found]


def _short(value: str, limit: int = 80) -> str:
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _placeholders(text: str) -> list[str]:
    out = []
    masked = text
    for pattern in _PLACEHOLDERS:
        for m in pattern.finditer(masked):
            out.append(m.group(0))
        masked = pattern.sub(lambda m: " " * len(m.group(0)), masked)
    return _dedupe(out)


def check_draft(text: DraftText, *, allowed_urls: Sequence[str] = ()) -> list[str]:
    """What is wrong with this email, as sentences a CSM can act on (empty: nothing).

    Blocks a draft whoever wrote it: an empty or over-long subject or body, a subject that is
    not one line, control characters, leftover placeholders ("{{first_name}}", "[Company]",
    "<first name>", "XXX", "TODO"...), mailto: links, and any link (http(s)://..., www....,
    host/path) that is not exactly one of `allowed_urls` (the configured help and booking
    links; case of scheme and host and a trailing slash do not matter).
    """
    subject, body = text.subject or "", text.body or ""
    problems: list[str] = []
    if not subject.strip():
        problems.append("the subject is empty")
    if not body.strip():
        problems.append("the body is empty")
    if len(subject) > SUBJECT_MAX:
        problems.append(f"the subject is {len(subject):,} characters long (at most {SUBJECT_MAX})")
    if len(body) > BODY_MAX:
        problems.append(f"the body is {len(body):,} characters long (at most {BODY_MAX:,})")
    if "\n" in subject.strip() or "\r" in subject.strip():
        problems.append("the subject must be a single line")
    if _CONTROL.search(subject) or _CONTROL.search(body.replace("\r\n", "\n")):
        problems.append("the text contains control characters")
    for where, value in (("subject", subject), ("body", body)):
        for token in _placeholders(value):
            problems.append(f'leftover placeholder in the {where}: "{_short(token, 60)}"')
    allowed = [u for u in allowed_urls if u and u.strip()]
    only = ("only the configured help and booking links may appear" if allowed
            else "no links are configured, so none may appear")
    for kind, value in find_links(subject + "\n" + body):
        if kind == "mailto":
            problems.append(f'mailto: links are not allowed: "{_short(_strip_trailing(value))}"')
        elif not _allowed(value, allowed):
            problems.append(f'link not allowed: "{_short(_strip_trailing(value))}" ({only})')
    return _dedupe(problems)


# --- the stricter checks a model's draft passes -----------------------------------------------

# Offers of anything: money off, free periods, credits, gifts, upgrades. A model may not
# promise what only a person can ("feel free to reply" and "hassle-free" are not offers).
_PROMISES = re.compile(
    r"\b\d{1,3}(?:[.,]\d+)?\s?%|\bper\s?cent\b|\bdiscount\w*|\brefund\w*|\brebate\w*|\bcoupon\w*"
    r"|\bpromo(?:tion(?:al)?)?\s*codes?\b|\bvoucher\w*|\bcredits?\b(?!\s*cards?)|\bwaive\w*|\bcomplimentary\b"
    r"|(?<!feel\s)(?<!-)\bfree\b(?!-)|\bno\s+(?:extra\s+|additional\s+)?(?:charge|cost|fee)s?\b"
    r"|\bat\s+no\s+(?:extra\s+|additional\s+)?(?:charge|cost)\b|(?<!count\s)(?<!rely\s)(?<!depend\s)(?<!lean\s)"
    r"\bon\s+(?:us|the\s+house)\b|\bgifts?\b|\bgift\s*cards?\b|\bbonus\w*|\brewards?\b|\bcash\s?back\b"
    r"|\bmoney\s+back\b|\breimburs\w*|\bprizes?\b|\bwinners?\b|\bexclusive\b|\bno\s+strings\s+attached\b"
    r"|\b(?:extend\w*|prolong\w*)\s+(?:your\s+|the\s+)?trial\b|\btrial\s+extension\b"
    r"|\bextra\s+(?:months?|weeks?|days?|seats?|users?|licen[cs]es?|storage)\b"
    r"|\bupgrad\w*\s+(?:you|your\s+(?:account|plan|subscription|tier|workspace))\b"
    r"|\b(?:free|complimentary|plan|tier)\s+upgrades?\b"
    r"|\bupgrad\w*\s+(?:you\s+)?to\s+(?:a\s+|the\s+|our\s+)?(?:pro|premium|paid|business|enterprise|higher|next)\b"
    r"|\bprice\w*|\bpricing\b|\bcheaper\b|\bspecial\s+(?:offer|deal|rate)s?\b|\bdeals?\b"
    r"|[$€£¥]\s?\d|\b\d+\s?(?:usd|eur|gbp|dollars|euros|bucks)\b|\bguarantee\w*",
    re.IGNORECASE,
)
# Requests for what no recovery email asks for: passwords, codes, keys, card or bank details.
_SECRETS = re.compile(
    r"\bpass(?:words?|codes?|phrases?)\b|\b(?:2fa|mfa|otp|one[-\s]?time|verification|security|auth\w*|log[-\s]?in"
    r"|sign[-\s]?in|sms|confirmation|access)\s+(?:codes?|pins?|tokens?)\b|\botps?\b|\bapi[-\s]?keys?\b"
    r"|\b(?:access|bearer|refresh|api|secret|session)\s+tokens?\b|\b(?:secret|private|license)\s+keys?\b"
    r"|\bcredentials?\b|\b(?:log[-\s]?in|sign[-\s]?in|account)\s+(?:details|info(?:rmation)?|data)\b"
    r"|\b(?:card|cvv|cvc)\s+(?:numbers?|details|info(?:rmation)?|codes?)\b|\b(?:cvv2?|cvc2?)\b"
    r"|\bexpir(?:y|ation)\s+date\b|\bbank\s+(?:details|account|info(?:rmation)?|logins?)\b"
    r"|\b(?:account|routing|sort)\s+numbers?\b|\biban\b|\bswift\s+code\b|\bsocial\s+security\b|\bssn\b"
    r"|\bpin\s+(?:codes?|numbers?)\b|\b(?:seed|recovery)\s+(?:phrases?|codes?|words)\b"
    r"|\b(?:send|share|e-?mail|reply\s+with|provide|give|tell|text|enter|type|paste|forward)\b[^.!?\n]{0,40}"
    r"\b(?:(?:credit|debit)\s+card|card|payment\s+(?:details|info\w*|method)|billing\s+(?:details|info\w*))\b",
    re.IGNORECASE,
)
# The pressure and threats of phishing mail.
_PRESSURE = re.compile(
    r"\burgent\w*|\bact\s+(?:now|fast|quickly)\b|\blast\s+chance\b|\bfinal\s+(?:notice|warning|reminder)\b"
    r"|\bwithin\s+(?:the\s+next\s+)?(?:\d+|one|two|twenty[-\s]four|forty[-\s]eight)\s+(?:hours?|hrs?|minutes?)\b"
    r"|\b(?:suspend|terminat|deactivat|lock|clos|delet|disabl|cancel|restrict|block|freez)\w*\s+(?:your\s+)?"
    r"(?:account|access|subscription|service|data|workspace)\b"
    r"|\b(?:account|access|subscription|service|data|workspace)\s+(?:will|may|could|is\s+going\s+to)\s+(?:be\s+)?"
    r"(?:suspend|terminat|deactivat|lock|clos|delet|disabl|cancel|restrict|block|freez|lost)\w*"
    r"|\bverify\s+your\s+(?:account|identity|e-?mail|details|payment)\b|\bconfirm\s+your\s+(?:identity|account|details)\b"
    r"|\bunusual\s+(?:activity|sign[-\s]?ins?|log[-\s]?ins?)\b|\bsecurity\s+(?:alert|breach|incident|warning)\b"
    r"|\bcompromised\b|\blegal\s+action\b|\bexpires?\s+(?:today|tonight|soon|in\s+\d+)\b|\bbefore\s+it'?s\s+too\s+late\b"
    r"|\battach(?:ed|ments?)\b",
    re.IGNORECASE,
)
# Another way to reach "us" than a reply: what an impostor asks for.
_CHANNELS = re.compile(r"\bwhats\s?app\b|\btelegram\b|\bwechat\b|\bviber\b|\bskype\b|\bdiscord\b|\bsignal\s+app\b"
                       r"|\b(?:text|dm|message)\s+me\b", re.IGNORECASE)
# Markup that hides where a link goes (the email is plain text).
_MARKUP = re.compile(r"\bhref\s*=|\]\s*\(|<\s*/?\s*(?:a|img|script|iframe|form|html|body|div|span)\b", re.IGNORECASE)
_JARGON = re.compile(r"\bP[0-3]\b|\bARR\b|\bMRR\b|\bchurn\w*|\bstall(?:s|ed|ing)?\b|\bhealth\s+score\b"
                     r"|\bstep_stall\b|\bnot_activated\b|\bticket_spike\b|\busage_drop\b|\brenewal_risk\b"
                     r"|\bpayment_failed\b|\bhigh_touch\b|\bself_serve\b")
_PROMPT_ECHO = re.compile(r"customer_text|</?\s*facts\s*>|\bignore\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?"
                          r"(?:previous|prior|above|earlier)\s+(?:instructions|prompts?|messages?)"
                          r"|\bsystem\s+prompt\b|\bas\s+an\s+ai\b|\blanguage\s+model\b", re.IGNORECASE)
_MODEL_DENY = (  # (pattern, what the CSM is told, how many examples to quote)
    (_PROMISES, "it offers or promises something we cannot stand behind", 4),
    (_SECRETS, "it asks for passwords, codes, keys or payment details", 3),
    (_PRESSURE, "it reads like phishing (pressure, threats or attachments)", 3),
    (_CHANNELS, "it asks the customer to move to another channel", 3),
    (_MARKUP, "it contains HTML or Markdown link markup", 2),
    (_JARGON, "it uses internal words", 4),
    (_PROMPT_ECHO, "it repeats the prompt's instructions or markup", 3),
)

# --- contact details and links in a model's draft, seen through obfuscation -----------------------

# Characters that look like a dot ("evil。com", "evil․com"); NFKC folds some ("．"), not these.
_DOTS = dict.fromkeys(map(ord, "\u3002\uff61\u2024\ufe52\u0589\u06d4\u2e3c\u00b7\u2027\u2219\u22c5\u30fb"
                               "\u0701\u0702\u05c3\u0387\u16eb\u2e31\u318d\ua78f"), ".")
# Format characters (zero-width, bidi controls, soft hyphen...): nothing in an email needs them.
_HIDDEN = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                     "\u2060-\u206f\u3164\ufe00-\ufe0e\ufeff\uffa0\ufff9-\ufffb]")
_DEFANG = (
    (re.compile(r"\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*", re.IGNORECASE), "."),  # evil[.]com, evil (dot) com
    (re.compile(r"\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*", re.IGNORECASE), "@"),  # jane (at) evil.com
    (re.compile(r"(?<=[^\W_])\s+(?:dot|d0t)\s+(?=[^\W_])", re.IGNORECASE), "."),  # evil dot com
    (re.compile(r"(?<=[^\W_])\s+\.\s*(?=[a-z]{2,24}\b)"), "."),  # evil .com, evil . com
    (re.compile(r"[\[(]:[\])]"), ":"),  # hxxp[:]//
)
# Host names: labels and a top-level domain of letters (or punycode), not inside a longer token.
# Matches start only where a host can (not right after a letter or "x."): linear time on any text.
_HOST = re.compile(r"(?<![\w@])(?<!\w\.)((?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9\-]{1,59}))"
                   r"(?![\w\-]|\.[^\W_])", re.IGNORECASE)
# Suffixes that are no top-level domain ("Node.js", "config.yaml"): names, not links.
_NOT_TLDS = frozenset({"js", "jsx", "ts", "tsx", "json", "yaml", "yml", "csv", "txt"})
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
_EMAIL = re.compile(r"(?<![\w.+\-'%!#$&*=?^`{|}~])[\w.+\-'%!#$&*=?^`{|}~]*\w@[^\W_](?:[\w\-]*[^\W_])?(?:\.[^\W_](?:[\w\-]*[^\W_])?)*")
# Schemes without "//" that still make a link: tel:, sms:, javascript:, data:...
_OTHER_SCHEME = re.compile(r"\b(?:tel|sms|callto|facetime|skype|whatsapp|javascript|vbscript|data|file|intent):\S*",
                           re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w/.\-])(?:\+|\(\+?)?\d[\d \t().\-/]{5,24}\d(?![\w/])")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
ECHO_WORDS = 8  # this many consecutive words of a ticket in the draft: it quotes the customer


def _shingles(text: str, n: int = ECHO_WORDS) -> set[tuple[str, ...]]:
    words = [w.casefold() for w in _WORD.findall(text)]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def check_model_draft(text: DraftText, facts: DraftFacts) -> list[str]:
    """`check_draft` plus what a model's draft must not do (its text may obey an injection
    in a ticket). Default-deny: no link, host name or IP address other than the configured
    links (obfuscated forms included: "evil dot com", "evil[.]com", look-alike dots, hidden
    characters), no email address but the CSM's own (`facts.own_emails`), no phone number
    (none is configured), no offers or promises, no requests for passwords, codes, keys or
    payment details, no phishing pressure or threats, no move to another channel, no hidden
    characters or link markup; nor our internal words, the prompt's markup or injection
    phrases, the customer's ticket text word for word, or a body far past the length the
    prompt asked for."""
    problems = check_draft(text, allowed_urls=facts.allowed_urls)
    raw = f"{text.subject}\n{text.body}"
    if _HIDDEN.search(raw):
        problems.append("it contains invisible or formatting characters")
    both = _canonical(raw)
    problems += _foreign_contacts(both, facts)
    for pattern, what, count in _MODEL_DENY:
        found = _dedupe(_short(m.group(0), 30) for m in pattern.finditer(both))
        if found:
            problems.append(f"{what} (" + ", ".join(f'"{f}"' for f in found[:count]) + ")")
    customer = _shingles("\n".join(f"{t.subject or ''}\n{t.body or ''}" for t in facts.tickets))
    if customer and customer & _shingles(both):
        problems.append("it quotes the customer's ticket text word for word")
    words = len(_WORD.findall(text.body))
    if words > MODEL_BODY_MAX_WORDS:
        problems.append(f"the body is {words} words long (at most {MODEL_BODY_MAX_WORDS})")
    return _dedupe(problems)


def _canonical(text: str) -> str:
    """The text as a reader (or a mail client) sees it: compatibility forms folded (fullwidth
    letters, "．"), look-alike dots made dots, hidden characters dropped, and the usual ways
    of writing a link so that filters miss it undone ("evil dot com", "evil[.]com", "(at)")."""
    text = unicodedata.normalize("NFKC", text).translate(_DOTS)
    text = _HIDDEN.sub("", text)
    for pattern, replacement in _DEFANG:
        text = pattern.sub(replacement, text)
    return text


def _foreign_contacts(text: str, facts: DraftFacts) -> list[str]:
    """Links, host names, IP addresses, email addresses and phone numbers in `text` that are
    not the configured links or the CSM's own address. Each kind is masked once found, so
    a link's host is not reported again as a host name."""
    problems: list[str] = []
    allowed = facts.allowed_urls
    only = ("only the configured help and booking links may appear" if allowed
            else "no links are configured, so none may appear")

    def mask(m: re.Match) -> str:
        return " " * len(m.group(0))

    for kind, value in find_links(text):
        if kind == "url" and not _allowed(value, allowed):
            problems.append(f'link not allowed: "{_short(_strip_trailing(value))}" ({only})')
        text = text.replace(value, " " * len(value))
    for m in _OTHER_SCHEME.finditer(text):
        problems.append(f'link not allowed: "{_short(m.group(0))}" ({only})')
    own = {e.strip().lower() for e in facts.own_emails if e and e.strip()}
    for m in _EMAIL.finditer(text):
        address = m.group(0).rstrip(".").lower()
        if address not in own:
            problems.append(f'email address not allowed: "{_short(address)}" (only the sender\'s own address may appear)')
    text = _EMAIL.sub(mask, text)
    hosts = {(urlsplit(u if "://" in u else "//" + u).hostname or "").lower() for u in allowed}
    company = _canonical(facts.account_name or "").strip().lower()
    for m in _HOST.finditer(text):
        host = m.group(1).lower()
        if host not in hosts and host != company and host.rsplit(".", 1)[1] not in _NOT_TLDS:
            problems.append(f'link not allowed: "{_short(host)}" ({only})')
    text = _HOST.sub(mask, text)
    for m in _IPV4.finditer(text):
        problems.append(f'link not allowed: "{m.group(0)}" ({only})')
    for m in _PHONE.finditer(text):
        number = m.group(0).strip()
        if sum(c.isdigit() for c in number) >= 7 and not _DATE.fullmatch(number):
            problems.append(f'phone number not allowed: "{_short(number)}" (no phone number is configured)')
    return problems


# --- fitting facts into the template and the prompt --------------------------------------------

_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\u00ad]")


def plain(value: str | None, limit: int) -> str:
    """One line of text: control and invisible characters (zero-width, bidi overrides) removed,
    whitespace collapsed, cut at a word boundary to `limit` characters (with "…")."""
    if not value:
        return ""
    value = unicodedata.normalize("NFC", str(value))
    value = _INVISIBLE.sub("", _CONTROL.sub(" ", value))
    value = " ".join(value.split())
    return clip(value, limit)


def clip(value: str, limit: int) -> str:
    if limit <= 0:
        return ""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _inline(value: str | None, limit: int) -> str | None:
    """A fact safe to put into the template's text, or None when it has markup-like characters
    or reads as a link or a placeholder (a name "{{first_name}}" or "XXX", a company "acme.com/x"):
    the template then says "Hi there" or "your team" instead."""
    text = plain(value, limit).strip(" ,.;:-'\"")
    if not text or re.search(r"[{}\[\]<>\\|`/@]", text) or "www." in text.lower() or "mailto:" in text.lower():
        return None
    if _placeholders(text) or find_links(text):
        return None
    return text


def _link(url: str | None) -> str | None:
    """A configured URL the template may show: http(s), one token, checks clean."""
    url = (url or "").strip()
    if not re.fullmatch(r"https?://[^\s<>\"'{}\[\]]+", url, re.IGNORECASE) or url[-1] in _TRAILING:
        return None
    if check_draft(DraftText("s", f"x {url} x"), allowed_urls=[url]):
        return None
    return url


def _phrase(name: str) -> str:
    """A step's display name inside a sentence, quoted: "Connect integration"."""
    return f"“{name}”"


def _lower_first(name: str) -> str:
    """"Billing" -> "billing" inside a sentence; "SSO" and "iOS app" stay as they are."""
    if len(name) > 1 and name[0].isupper() and name[1].islower():
        return name[0].lower() + name[1:]
    return name


def _days(days: float) -> str:
    if not math.isfinite(days) or days < 1.5:
        return "a day or so"
    if days < 14:
        return f"about {round(days)} days"
    if days < 60:
        return f"about {round(days / 7)} weeks"
    if days < 365:
        return f"about {round(days / 30)} months"
    return "more than a year"


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class _Parts:
    subject: str
    noticed: str
    next_step: str
    extra: list[str] = field(default_factory=list)


def _parts(facts: DraftFacts, company: str | None, help_url: str | None) -> _Parts:
    rule = facts.rule
    team = company or "your team"
    days = _days(facts.days_stalled)
    step = _inline(facts.stalled_step, 80)
    missing = [m for m in (_inline(s, 60) for s in facts.steps_missing[:3]) if m]
    done = len(facts.steps_done)
    total = done + len(facts.steps_missing)
    reply_help = ("If something is getting in the way, just reply and tell me what you're seeing; "
                  "I'll help you get past it.")

    if rule == "step_stall" and step:
        start = (f"You're off to a good start: {done} of {total} setup steps are done. " if done and total else "")
        return _Parts(
            subject=f"Need a hand with {_phrase(step)}?",
            noticed=f"{start}The next one, {_phrase(step)}, has been waiting for {days}, and that's "
                    "usually the step where a little help goes a long way.",
            next_step=(f"This short guide walks through it: {help_url}" if help_url else reply_help))
    if rule in ("step_stall", "not_activated"):
        if missing:
            left = (f"The steps still open are {_listing([_phrase(m) for m in missing])}."
                    if len(missing) > 1 else f"The step still open is {_phrase(missing[0])}.")
        else:
            left = "The setup steps are done; what's left is putting it to work with your team."
        since = (f"It's been {days} since {team} got started" if rule == "not_activated"
                 else f"Things have been quiet for {days}")
        return _Parts(
            subject=f"Getting {company} up and running" if company else "Getting you up and running",
            noticed=f"{since}, and I want to make sure you get to the point where it really pays off. {left}",
            next_step=(f"This guide shows the quickest way there: {help_url}" if help_url else reply_help))
    if rule == "ticket_spike":
        topic = next((t for t in (_inline(x, 40) for x in facts.ticket_topics) if t), None)
        about = f" about {_lower_first(topic)}" if topic else ""
        return _Parts(
            subject="Following up on your recent support requests",
            noticed=f"I saw that {team} has reached out to our support team a few times recently{about}, "
                    "and I want to make sure it all gets sorted out.",
            next_step=("If anything is still unresolved, reply here and I'll follow it up personally."
                       + (f" Some answers may be quicker in our help center: {help_url}" if help_url else "")))
    if rule == "usage_drop":
        return _Parts(
            subject="Checking in on how things are going",
            noticed=f"I noticed {team} has been a little less active over the past week, and I wanted "
                    "to check that everything is working the way you need it to.",
            next_step=(f"If something has become harder than it should be, these guides may help: {help_url}"
                       if help_url else
                       "If something has changed on your side, or something isn't working, "
                       "just reply and let me know."))
    if rule == "renewal_risk":
        return _Parts(
            subject=f"Making sure {company} has what it needs" if company else "Making sure you have what you need",
            noticed="Your renewal is coming up, and before then I'd like to make sure everything is working "
                    "well for your team, including anything that has been frustrating lately.",
            next_step=("If there's anything you'd like to see improved, just reply and tell me."
                       + (f" Our guides also cover the most common questions: {help_url}" if help_url else "")))
    if rule == "payment_failed":
        return _Parts(
            subject="A quick note about your recent payment",
            noticed=f"It looks like the most recent payment for {team} didn't go through. It happens: "
                    "often a card has expired or the bank held the charge.",
            next_step=("Could you check the payment details on your account when you have a moment?"
                       + (f" Here's how: {help_url}" if help_url else
                          " If anything is unclear, just reply and I'll help.")))
    return _Parts(
        subject="Checking in",
        noticed=f"I wanted to check in and see how things are going for {team}.",
        next_step=(f"Our guides may help with the next steps: {help_url}" if help_url else
                   "If anything is getting in the way, just reply and let me know."))


def template_draft(facts: DraftFacts) -> DraftText:
    """The built-in recovery email for this stall: greeting, what we noticed in plain words,
    one next step (with the help link when configured), an offer to talk (with the booking
    link when configured), and a sign-off. Facts that could read as a link or a placeholder
    are left out, so the result always passes `check_draft` with the configured links."""
    name = _inline(facts.contact_first_name, 40)
    company = _inline(facts.account_name, 60)
    help_url, booking_url = _link(facts.help_url), _link(facts.booking_url)
    parts = _parts(facts, company, help_url)
    follow_up = facts.attempt >= 2

    if facts.rule == "payment_failed":
        call = ""  # billing needs no meeting
    elif booking_url:
        call = (f"I'd be glad to go through it together on a short call; pick any time that suits you: {booking_url}"
                if facts.track == "high_touch" else
                f"If it's easier to talk it through, you can pick a time with me here: {booking_url}")
    elif facts.track == "self_serve":
        call = ""
    else:
        call = "I'm also happy to jump on a quick call; just reply with a time that works for you."

    opener = "I'm following up on my earlier note. " if follow_up else ""
    paragraphs = [f"Hi {name}," if name else "Hi there,", opener + parts.noticed, parts.next_step]
    if call:
        paragraphs.append(call)
    signoff = _inline(facts.csm_name, 60) or _inline(facts.signoff_team, 60) or DEFAULT_SIGNOFF
    paragraphs.append(f"Best,\n{signoff}")
    subject = parts.subject
    if follow_up and not subject.lower().startswith("following up"):
        subject = "Following up: " + subject
    if len(subject) > SUBJECT_MAX:
        subject = clip(subject, SUBJECT_MAX)
    return DraftText(subject=subject, body="\n\n".join(paragraphs))
