"""A real SMTP server (aiosmtpd) on loopback, for tests that send mail with smtplib as-is.

    with FakeSMTP() as smtp:
        sender = MailSender(..., SMTP_URL=smtp.url)
        ...
        [received] = smtp.messages
        assert received.message["Subject"] == "Hi"

Every accepted message is recorded (`messages`): the envelope (MAIL FROM, RCPT TO, their
options), the exact bytes of the DATA, and the message parsed with the modern email policy.
`hellos` counts EHLO/HELO commands: a test can see that nobody even connected.

Faults, each for the next `times` SMTP transactions:

    fail("rcpt" | "mail" | "data", "451 4.3.0 Try again later")   answer that instead
    drop("mail" | "rcpt" | "data")   close the connection at that stage; at "data" the message
                                     is first RECORDED: the "accepted, but the answer was lost" case
    slow(stage, seconds)             wait before answering; at "data" the message is recorded
                                     first, then the 250 waits

TLS: `FakeSMTP(tls="starttls")` offers STARTTLS, `tls="implicit"` is TLS from the first byte
(smtps), both with a self-signed certificate for 127.0.0.1 that `client_context()` trusts.
Auth: `FakeSMTP(auth={"user": "password"})` offers AUTH PLAIN/LOGIN (also without TLS, on
loopback), records successful logins in `logins` and refuses the rest with 535.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.policy
import ipaddress
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly what came after DATA (dot-unstuffed, without the final ".")
    message: EmailMessage
    mail_options: list[str] = field(default_factory=list)
    login: str | None = None

    @property
    def text(self) -> str:
        """The decoded plain-text body."""
        return self.message.get_content()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return _free_port()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-smtp.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler:
    def __init__(self, fake: "FakeSMTP"):
        self.fake = fake

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.fake._lock:
            self.fake.hellos += 1
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        with self.fake._lock:
            self.fake.hellos += 1
        return f"250 {server.hostname}"

    async def _fault(self, server, stage: str) -> str | None:
        """The reply a programmed fault gives instead of the normal one (None: go on)."""
        fault = self.fake._take(stage)
        if fault and fault.startswith("slow:"):
            await asyncio.sleep(float(fault.removeprefix("slow:")))
            return None
        if fault == "drop":
            server.transport.abort()
            return "421 4.3.0 gone"  # never reaches the client
        return fault

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if reply := await self._fault(server, "mail"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if reply := await self._fault(server, "rcpt"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        fault = self.fake._take("data")
        if fault and fault not in ("drop",) and not fault.startswith("slow:"):
            return fault
        data = bytes(envelope.original_content or envelope.content)
        auth = getattr(session, "auth_data", None)
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        received = Received(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), data=data,
                            message=BytesParser(policy=email.policy.default).parsebytes(data),
                            mail_options=list(envelope.mail_options), login=login)
        with self.fake._lock:
            self.fake.messages.append(received)
            number = len(self.fake.messages)
        self.fake.received.set()
        if fault == "drop":
            server.transport.abort()
            return "421 4.3.0 gone"
        if fault and fault.startswith("slow:"):
            await asyncio.sleep(float(fault.removeprefix("slow:")))
        return f"250 2.0.0 Ok: queued as FAKE{number}"


class FakeSMTP:
    def __init__(self, *, tls: str | None = None, auth: dict[str, str] | None = None,
                 require_starttls: bool = False, smtputf8: bool = True):
        self.port = _free_port()
        self.tls = tls
        self.auth = auth
        self.messages: list[Received] = []
        self.logins: list[str] = []
        self.hellos = 0
        self.received = threading.Event()  # set on every recorded message
        self._faults: dict[str, list[str]] = {"mail": [], "rcpt": [], "data": []}
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="fake-smtp-")
        self.cert_path: Path | None = None
        kwargs: dict = {"server_hostname": "fake-smtp.test", "enable_SMTPUTF8": smtputf8, "ready_timeout": 10}
        if tls:
            self.cert_path, key_path = _self_signed(Path(self._dir.name))
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_context.load_cert_chain(self.cert_path, key_path)
            if tls == "implicit":
                kwargs["ssl_context"] = server_context
            elif tls == "starttls":
                kwargs["tls_context"] = server_context
                kwargs["require_starttls"] = require_starttls
            else:
                raise ValueError(tls)
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_require_tls"] = False
        self.controller = Controller(_Handler(self), hostname=HOST, port=self.port, **kwargs)

    # -- lifecycle

    def __enter__(self) -> "FakeSMTP":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
        self._dir.cleanup()

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        return f"{scheme}://{HOST}:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts this server's certificate."""
        return ssl.create_default_context(cafile=str(self.cert_path)) if self.cert_path else ssl.create_default_context()

    # -- faults

    def fail(self, stage: str, reply: str, times: int = 1) -> None:
        with self._lock:
            self._faults[stage].extend([reply] * times)

    def drop(self, stage: str, times: int = 1) -> None:
        self.fail(stage, "drop", times)

    def slow(self, stage: str, seconds: float, times: int = 1) -> None:
        """Wait before answering; at "data" the message is recorded first."""
        self.fail(stage, f"slow:{seconds}", times)

    def _take(self, stage: str) -> str | None:
        with self._lock:
            return self._faults[stage].pop(0) if self._faults[stage] else None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.auth is not None:
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.auth.get(login) == password:
                with self._lock:
                    self.logins.append(login)
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)
