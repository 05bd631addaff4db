"""SMTP for recovery emails: the `SMTP_URL` contract, the message, and one delivery whose
errors are classified for the mail outbox (bot.mail.outbox).

SMTP_URL (contract, DESIGN.md "Interfaces"):

    smtp://[user:password@]host[:port][?starttls=auto|required|off][&timeout=SECONDS]
    smtps://[user:password@]host[:port][?timeout=SECONDS]

- `smtp://` speaks plain SMTP and upgrades with STARTTLS when the server offers it
  (`starttls=auto`, the default); `starttls=required` refuses a server that does not offer
  it, `starttls=off` never upgrades. With `auto`, a password is never sent unencrypted to a
  server that is not on loopback: use `starttls=off` to allow that explicitly.
- `smtps://` is implicit TLS (the connection is TLS from the first byte).
- Default ports: 465 for smtps; for smtp, 587 (submission) when there are credentials or
  `starttls=required`, else 25.
- The user name and password are percent-decoded: `smtp://me%40acme.com:p%40ss@host` (ASCII
  only: smtplib's AUTH cannot send anything else).
- Certificates are verified against the system's CA store (`SSL_CERT_FILE` points OpenSSL at
  another bundle, e.g. a private relay's CA).

A bad URL raises ValueError saying what is wrong and never repeating the password (nor any
part of the URL that could be a piece of it when the password was not percent-encoded).

`deliver` talks to the server with smtplib and an absolute deadline, and raises DeliveryError
with one of four kinds:

    transient   try again later: connection refused/reset/timeout, the server disconnected,
                any 4xx reply, a 421 anywhere
    config      an operator must fix something (credentials, TLS, the From address refused,
                AUTH missing): tried again later too, so nothing is lost while they do
    permanent   this email cannot be delivered: a 5xx to RCPT or to the message, an invalid
                or internationalized address the server cannot take
    maybe_sent  the message's final "." was (perhaps) transmitted but no reply was read: the
                server may have accepted it. Never retried by the outbox.

The message's end-of-data is the line between "nothing was sent" and "maybe": a server
delivers nothing before it has read the terminating "." (RFC 5321 4.1.1.4), so `deliver`
calls `before_final_dot` right before writing it (the outbox records the row as
'transmitting' there) and everything that fails earlier is safe to retry.
"""

from __future__ import annotations

import email.policy
import email.utils
import ipaddress
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import errors
from email.header import Header
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Callable, Literal
from urllib.parse import parse_qsl, unquote

DEFAULT_TIMEOUT = 30.0  # each socket operation
TOTAL_TIMEOUT = 120.0  # the whole conversation, well under the outbox's 5-minute lease
MAX_TIMEOUT = 300.0
STARTTLS_MODES = ("auto", "required", "off")
OPTIONS = ("starttls", "timeout")
ENCODE_HINT = ("percent-encode '@', ':', '/', '?' and '#' in the user name and password "
               "(%40, %3A, %2F, %3F, %23)")
FORM = "smtp://user:password@host:587 or smtps://user:password@host:465"

# The message policy: CRLF, and bodies kept 7-bit (quoted-printable or base64 for non-ASCII
# text and long lines), so any relay takes them whatever it says about 8BITMIME.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

Kind = Literal["transient", "config", "permanent", "maybe_sent"]


# ----------------------------------------------------------------------------- SMTP_URL


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: str = "auto"  # auto | required | off (always "off" with implicit TLS)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT

    def describe(self) -> str:
        """The server, for logs and messages: scheme, user and host, never the password."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{user}{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_smtp_url(url: str | None) -> SmtpConfig:
    """The SMTP_URL as a config; ValueError naming the problem (never echoing the password)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("SMTP_URL is empty")
    url = url.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError(f"SMTP_URL contains spaces or control characters; {ENCODE_HINT}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"SMTP_URL must look like {FORM}")
    scheme = scheme.lower()
    if scheme not in ("smtp", "smtps"):
        shown = f" {scheme!r}" if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme) else ""
        raise ValueError(f"SMTP_URL's scheme{shown} is not supported: use {FORM}")
    implicit = scheme == "smtps"

    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        if not raw_user:
            raise ValueError("SMTP_URL has a password but no user name (smtp://user:password@host)")
        if not colon or not raw_password:
            raise ValueError("SMTP_URL has a user name but no password (smtp://user:password@host)")
        username = _decode(raw_user, "user name")
        password = _decode(raw_password, "password")
    host, port = _host_port(hostport)

    path, _, fragment = tail.partition("#")
    path, _, query = path.partition("?")
    if "@" in tail:
        raise ValueError(f"SMTP_URL has an '@' after the host; {ENCODE_HINT}")
    if path not in ("", "/"):
        raise ValueError(f"SMTP_URL has a path after the host; the form is {FORM} "
                         f"(if the password contains '/', {ENCODE_HINT})")
    if fragment or tail.endswith("#"):
        raise ValueError(f"SMTP_URL has a '#' fragment; {ENCODE_HINT}")

    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        name = name.lower()
        if name not in OPTIONS:
            shown = f" {name!r}" if re.fullmatch(r"[a-z_]{1,20}", name) else ""
            raise ValueError(f"SMTP_URL has an unknown option{shown}: the options are {', '.join(OPTIONS)}")
        if name in options:
            raise ValueError(f"SMTP_URL gives the option {name!r} twice")
        options[name] = value
    starttls = options.get("starttls", "off" if implicit else "auto").lower()
    if implicit and "starttls" in options:
        raise ValueError("SMTP_URL: starttls does not apply to smtps:// (already TLS from the start); "
                         "use smtp://...?starttls=required for STARTTLS")
    if starttls not in STARTTLS_MODES:
        raise ValueError("SMTP_URL's starttls must be auto, required or off")
    timeout = DEFAULT_TIMEOUT
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0.1 <= timeout <= MAX_TIMEOUT:  # NaN fails too
            raise ValueError(f"SMTP_URL's timeout must be a number of seconds from 0.1 to {MAX_TIMEOUT:g}")

    if port is None:
        port = 465 if implicit else (587 if username or starttls == "required" else 25)
    return SmtpConfig(host=host, port=port, implicit_tls=implicit, starttls=starttls,
                      username=username, password=password, timeout=timeout)


def _decode(raw: str, what: str) -> str:
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the {what} in SMTP_URL is not valid percent-encoded UTF-8") from None
    if not value:
        raise ValueError(f"the {what} in SMTP_URL is empty")
    if not value.isascii():  # smtplib's AUTH encodes them as ASCII
        raise ValueError(f"the {what} in SMTP_URL has non-ASCII characters, which SMTP AUTH here cannot send")
    return value


def _host_port(hostport: str) -> tuple[str, int | None]:
    hint = f"(if the password contains '/', '?' or '#', {ENCODE_HINT})"
    port_text: str | None = None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError("SMTP_URL's IPv6 host has no closing ']'")
        host, after = hostport[1:close], hostport[close + 1:]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError("SMTP_URL's host in [brackets] is not an IPv6 address") from None
        if after:
            if not after.startswith(":"):
                raise ValueError(f"SMTP_URL has something after the IPv6 host {hint}")
            port_text = after[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if not host:
            raise ValueError(f"SMTP_URL has no host {hint}")
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?",
                            host) or len(host) > 253:
            raise ValueError(f"SMTP_URL's host is not a valid host name or address {hint}")
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"SMTP_URL's port must be a number from 1 to 65535 {hint}")
        port = int(port_text)
    return host, port


def parse_mail_from(value: str | None) -> tuple[str, str]:
    """STALLWATCH_MAIL_FROM as (the From header, the envelope sender address)."""
    example = "e.g. 'Acme Customer Success <success@acme.com>' or 'success@acme.com'"
    if not value or not value.strip():
        raise ValueError("STALLWATCH_MAIL_FROM is empty")
    try:
        header = HeaderRegistry()("from", value.strip())
        addresses = header.addresses
    except Exception:  # the header parser's own errors
        addresses = ()
        header = None
    if header is None or header.defects or len(addresses) != 1 \
            or not addresses[0].username or not addresses[0].domain or "." not in addresses[0].domain.strip("."):
        raise ValueError(f"STALLWATCH_MAIL_FROM must be one email address ({example}), not {value.strip()[:200]!r}")
    return str(header), addresses[0].addr_spec


def mail_domain(address: str | None) -> str | None:
    """The domain of STALLWATCH_MAIL_FROM (for Message-IDs), or None when it is unusable."""
    try:
        return parse_mail_from(address)[1].rsplit("@", 1)[1].lower()
    except (ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------- the message


def build_message(*, mail_from: str, recipient: str, subject: str, body: str, message_id: str,
                  draft_id: int, date: datetime) -> EmailMessage:
    """The email as approved: a plain-text UTF-8 body, exactly the approved subject.

    ValueError when it cannot be an email (a recipient that is not exactly one address, a
    subject on several lines): the outbox fails it rather than send something else."""
    if "\r" in subject or "\n" in subject:
        raise ValueError("the subject is not a single line")
    if not recipient or any(c in recipient for c in "\r\n,;<>") or recipient.strip() != recipient:
        raise ValueError(f"the recipient {recipient[:320]!r} is not one plain email address")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = mail_from
    msg["To"] = recipient
    to = msg["To"]
    defects = [d for d in to.defects if not isinstance(d, errors.NonASCIILocalPartDefect)]  # SMTPUTF8 takes those
    if defects or len(to.addresses) != 1 or to.addresses[0].addr_spec != recipient \
            or not to.addresses[0].domain:
        raise ValueError(f"the recipient {recipient[:320]!r} is not a valid email address")
    msg.set_raw("Subject", encode_subject(subject))
    msg["Date"] = email.utils.format_datetime(date.astimezone(timezone.utc))
    msg["Message-ID"] = message_id
    msg["X-Stallwatch-Draft"] = str(draft_id)
    msg.set_content(body, subtype="plain", charset="utf-8")
    return msg


def encode_subject(subject: str) -> str:
    """The Subject header's value, folded and encoded so that a reader decodes exactly
    `subject`: plain when it is ASCII and survives as is, else RFC 2047 UTF-8 encoded words.

    Not the modern email API's own folding: it drops the space between two encoded words
    when it folds a long non-ASCII subject ("Héllo wörld" arrives as "Héllowörld"), and a
    leading space. Each candidate is parsed back before it is used; ValueError when none
    round-trips (nothing else is sent than what the CSM approved)."""
    for charset in (("us-ascii", "utf-8") if subject.isascii() else ("utf-8",)):
        value = Header(subject, charset, header_name="Subject").encode(linesep="\r\n")
        # Exactly the line the generator will write (it refolds a line over 78 characters).
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(POLICY.fold_binary("Subject", value) + b"\r\n")
        if parsed["Subject"] == subject:
            return value
    raise ValueError("the subject cannot be encoded in an email header exactly as written")


# ----------------------------------------------------------------------------- delivery


class DeliveryError(Exception):
    def __init__(self, kind: Kind, message: str, *, code: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code


class _Session:
    """smtplib with a hook before the message's final "." and a record of what happened."""

    before_final_dot: Callable[[], None] | None = None
    dot_sent = False  # the final "." may have reached the server
    data_reply: tuple[int, bytes] | None = None  # the server's answer to it
    hook_error: BaseException | None = None

    def data(self, msg):  # smtplib.SMTP.data, split around the final "."
        self.putcmd("data")
        code, repl = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, repl)
        if isinstance(msg, str):  # sendmail passes bytes; kept for smtplib's contract
            msg = msg.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("ascii")
        quoted = re.sub(rb"(?m)^\.", b"..", msg)
        if not quoted.endswith(b"\r\n"):
            quoted += b"\r\n"
        self.send(quoted)
        if self.before_final_dot is not None:
            try:
                self.before_final_dot()
            except BaseException as e:  # nothing delivered: the server drops a message without its "."
                self.hook_error = e
                raise
        self.dot_sent = True
        self.send(b".\r\n")
        self.data_reply = self.getreply()
        return self.data_reply


class _SMTP(_Session, smtplib.SMTP):
    pass


class _SMTPS(_Session, smtplib.SMTP_SSL):
    pass


class _Deadline:
    """Cuts the connection when the whole conversation takes longer than `seconds` (a server
    trickling bytes defeats per-operation timeouts)."""

    def __init__(self, session: smtplib.SMTP, seconds: float):
        self.session = session
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = self.session.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket, below any TLS layer
            except OSError:
                pass

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


def deliver(config: SmtpConfig, message: EmailMessage, *, envelope_from: str, recipient: str,
            before_final_dot: Callable[[], None] | None = None, ssl_context: ssl.SSLContext | None = None,
            total_timeout: float = TOTAL_TIMEOUT, local_hostname: str | None = None) -> str:
    """Send `message` to `recipient`; returns the server's reply to the end of data (e.g.
    "250 2.0.0 Ok: queued as 4Zx..."). Raises DeliveryError; an exception raised by
    `before_final_dot` propagates as is (nothing was delivered)."""
    context = ssl_context or ssl.create_default_context()
    if config.implicit_tls:
        session: _Session = _SMTPS(local_hostname=local_hostname, timeout=config.timeout, context=context)
    else:
        session = _SMTP(local_hostname=local_hostname, timeout=config.timeout)
    session.before_final_dot = before_final_dot
    session._host = config.host  # what smtplib checks the certificate against (set by SMTP(host) otherwise)
    phase = "connect"
    deadline = _Deadline(session, total_timeout)
    try:
        with deadline:
            code, greeting = session.connect(config.host, config.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, greeting)
            phase = "hello"
            session.ehlo_or_helo_if_needed()
            if not config.implicit_tls and config.starttls != "off":
                phase = "starttls"
                if session.has_extn("starttls"):
                    session.starttls(context=context)
                    session.ehlo()
                elif config.starttls == "required":
                    raise DeliveryError("config", f"{config.describe()} does not offer STARTTLS (starttls=required)")
                elif config.password is not None and not config.loopback:
                    raise DeliveryError("config", f"{config.describe()} does not offer STARTTLS: refusing to send the "
                                                  "password unencrypted (add ?starttls=off to SMTP_URL to allow it)")
            if config.username is not None:
                phase = "login"
                session.login(config.username, config.password or "")
            phase = "send"
            session.send_message(message, from_addr=envelope_from, to_addrs=[recipient])
            code, reply = session.data_reply or (250, b"")
    except DeliveryError:
        _close(session)
        raise
    except BaseException as e:
        _close(session)
        if session.hook_error is not None and e is session.hook_error:
            raise
        if isinstance(e, (KeyboardInterrupt, SystemExit)) and not session.dot_sent:
            raise
        raise _classify(e, phase, config, session, deadline.fired) from None
    try:
        session.quit()
    except Exception:  # the message is accepted: a failing QUIT changes nothing
        _close(session)
    return f"{code} {_text(reply)}".strip()


def _close(session: smtplib.SMTP) -> None:
    try:
        session.close()
    except Exception:
        pass


def _text(reply: bytes | str | None, limit: int = 300) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join((reply or "").split())[:limit]


def _reply(code: int, reply) -> str:
    return f"{code} {_text(reply)}".strip()


def _by_code(code: int, message: str, *, otherwise: Kind = "permanent") -> DeliveryError:
    kind: Kind = "transient" if 400 <= code < 500 else otherwise
    return DeliveryError(kind, message, code=code)


def _classify(e: BaseException, phase: str, config: SmtpConfig, session: _Session, timed_out: bool) -> DeliveryError:
    server = config.describe()
    if session.dot_sent:
        if session.data_reply is not None and isinstance(e, smtplib.SMTPDataError):
            # The server answered the message itself: a definite no (4xx: later; 5xx: never).
            return _by_code(e.smtp_code, f"the mail server refused the message ({_reply(e.smtp_code, e.smtp_error)})")
        why = "the deadline passed" if timed_out else f"{type(e).__name__}: {_text(str(e))}"
        return DeliveryError("maybe_sent", f"the connection to {server} broke right after the message was "
                                           f"transmitted, before the server confirmed it ({why})")
    if timed_out:
        return DeliveryError("transient", f"{server} took longer than {TOTAL_TIMEOUT:g} s (during {phase})")
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(e.recipients.values()), (550, b""))
        return _by_code(code, f"the mail server refused the recipient ({_reply(code, reply)})")
    if isinstance(e, smtplib.SMTPSenderRefused):
        return _by_code(e.smtp_code, f"the mail server refused the sender {e.sender} ({_reply(e.smtp_code, e.smtp_error)}): "
                                     "check STALLWATCH_MAIL_FROM and what the relay accepts", otherwise="config")
    if isinstance(e, smtplib.SMTPAuthenticationError):
        return DeliveryError("config", f"{server} refused the SMTP user name or password "
                                       f"({_reply(e.smtp_code, e.smtp_error)})", code=e.smtp_code)
    if isinstance(e, smtplib.SMTPNotSupportedError):
        if phase == "send":  # send_message: an internationalized address without SMTPUTF8
            return DeliveryError("permanent", f"the address needs SMTPUTF8, which {server} does not support")
        return DeliveryError("config", f"{server}: {_text(str(e))}")
    if isinstance(e, smtplib.SMTPServerDisconnected):
        return DeliveryError("transient", f"{server} closed the connection (during {phase})")
    if isinstance(e, smtplib.SMTPResponseException):
        if e.smtp_code == 421 or 400 <= e.smtp_code < 500:
            return DeliveryError("transient", f"{server} answered {_reply(e.smtp_code, e.smtp_error)} (during {phase})",
                                 code=e.smtp_code)
        otherwise: Kind = "config" if phase in ("connect", "hello", "starttls", "login") else "permanent"
        return DeliveryError(otherwise, f"the mail server refused it ({_reply(e.smtp_code, e.smtp_error)}, "
                                        f"during {phase})", code=e.smtp_code)
    if isinstance(e, ssl.SSLCertVerificationError):
        return DeliveryError("config", f"TLS with {server} failed: {_text(e.verify_message or str(e))} "
                                       "(SSL_CERT_FILE can point at the relay's CA)")
    if isinstance(e, socket.timeout):
        return DeliveryError("transient", f"{server} timed out (during {phase})")
    if isinstance(e, OSError):  # refused, reset, unreachable, DNS, TLS errors
        detail = e.strerror or _text(str(e)) or type(e).__name__
        return DeliveryError("transient", f"could not talk to {server} (during {phase}): {detail}")
    # Anything else is a bug or an odd server: before MAIL FROM it is about the setup, not this email.
    kind: Kind = "config" if phase in ("connect", "hello", "starttls", "login") else "permanent"
    return DeliveryError(kind, f"{type(e).__name__} while sending (during {phase}): {_text(str(e))}")
