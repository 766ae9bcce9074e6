"""Email: templates, the SMTP (embedded default) and SendGrid (production) providers, the
DuckDB notification ledger and the :class:`Notifier` that sends each notification at most once.

At most once: the ledger records the intent (``sending``) before the message is handed to the
mail service and ``sent`` after it was accepted. A definite failure (connection refused,
recipient refused, HTTP 4xx/5xx answer) is recorded as ``failed`` and retried by the next
run; a failure after the message may already have been accepted (the connection dropped
while the server was answering DATA) stays ``sending`` and is never retried automatically:
it is listed by :meth:`DuckDBLedger.uncertain` for a person to check.

No address or name is ever logged: log lines carry the notification key
(``kind/student_id/admission``) and the outcome only.
"""

from __future__ import annotations

import email.message
import email.utils
import logging
import re
import smtplib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdsops.identity import InvalidEmail, canonicalize
from cdsops.providers.base import EmailMessage, NotificationKey, ProviderError
from cdsops.providers.retry import Backoff

from ..times import naive_utcnow

__all__ = [
    "KINDS",
    "TEMPLATE_DIR",
    "TemplateError",
    "DeliveryUncertain",
    "render",
    "SMTPEmailProvider",
    "SendGridEmailProvider",
    "DuckDBLedger",
    "Notifier",
    "NotifyReport",
]

log = logging.getLogger("cdsops.providers.email")

KINDS = ("welcome", "readmission", "expiry")
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "email"


class TemplateError(ProviderError):
    """A template cannot be rendered with the given values."""


class DeliveryUncertain(ProviderError):
    """The mail service may or may not have accepted the message: do not resend automatically."""


# --------------------------------------------------------------------------- templates

_env_lock = threading.Lock()
_envs: dict[str, Any] = {}


def _env(template_dir: Path):
    import jinja2

    key = str(template_dir)
    with _env_lock:
        if key not in _envs:
            _envs[key] = jinja2.Environment(
                loader=jinja2.FileSystemLoader(key),
                undefined=jinja2.StrictUndefined,
                autoescape=False,  # plain-text mail
                keep_trailing_newline=True,
            )
        return _envs[key]


_OPTIONAL = {"first_name": "", "propagation_note": False}
GIVEN_NAME_MAX = 40
# letters of any script, single hyphens/apostrophes/spaces between them: "Zoë", "Anne-Marie", "O'Brien"
_GIVEN_NAME_RE = re.compile(r"[^\W\d_]+(?:['\u2019 -][^\W\d_]+)*")


def plain_given_name(value: object) -> str:
    """``value`` when it is a plain given name (letters, spaces, hyphens, apostrophes; at most
    :data:`GIVEN_NAME_MAX` characters), else ``""``: the name comes from an untrusted registration
    row and the mail goes to an unverified address, so nothing else (links, digits, markup, line
    breaks) is ever put into a message."""
    if not isinstance(value, str) or len(value) > GIVEN_NAME_MAX:
        return ""
    return value if _GIVEN_NAME_RE.fullmatch(value) else ""


def given_name(full_name: str | None) -> str:
    """The first word of ``full_name`` when it is a plain given name, else ``""``."""
    words = (full_name or "").split()
    return plain_given_name(words[0]) if words else ""


def render(kind: str, to: str, key: NotificationKey, context: Mapping[str, Any], template_dir: Path | None = None) -> EmailMessage:
    """Render the ``kind`` message for ``to``; missing values raise :class:`TemplateError`."""
    import jinja2

    if kind not in KINDS:
        raise TemplateError(f"unknown message kind {kind!r}; expected one of {', '.join(KINDS)}")
    env = _env(template_dir or TEMPLATE_DIR)
    context = {**_OPTIONAL, **context}
    context["first_name"] = plain_given_name(context["first_name"])
    try:
        subject = env.get_template(f"{kind}.subject.j2").render(**context).strip()
        text = env.get_template(f"{kind}.txt.j2").render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {kind} needs a value: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} is missing") from None
    if "\n" in subject or "\r" in subject:
        raise TemplateError(f"template {kind}: the subject must be one line")
    return EmailMessage(to=to, subject=subject, text=text, key=key)


def _check_recipient(addr: str) -> None:
    try:
        canonicalize(addr)
    except InvalidEmail as exc:
        raise ProviderError(f"recipient address is invalid: {exc}") from None


# --------------------------------------------------------------------------- SMTP


class SMTPEmailProvider:
    """Send through an SMTP server (the embedded default: a local MTA or catch-all)."""

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "cdsops@localhost",
        *,
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
    ):
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.use_ssl = starttls, use_ssl
        self.username, self.password = username, password
        self.timeout = timeout
        self.backoff = backoff or Backoff(base=1.0, cap=30.0, max_attempts=4)

    def _mime(self, message: EmailMessage) -> email.message.EmailMessage:
        m = email.message.EmailMessage()
        m["From"] = self.sender
        m["To"] = message.to
        m["Subject"] = message.subject
        m["Date"] = email.utils.formatdate(localtime=False)
        domain = self.sender.rpartition("@")[2] or "localhost"
        m["Message-ID"] = email.utils.make_msgid(domain=domain)
        if message.key is not None:
            m["X-Cdsops-Notification"] = str(message.key)
        m.set_content(message.text)
        if message.html:
            m.add_alternative(message.html, subtype="html")
        return m

    def send(self, message: EmailMessage) -> None:
        _check_recipient(message.to)
        mime = self._mime(message)
        attempt = 0
        while True:
            try:
                conn = self._connect()
            except (OSError, smtplib.SMTPException) as exc:
                # Nothing was handed over yet: retrying cannot duplicate.
                attempt += 1
                if attempt >= self.backoff.max_attempts:
                    raise ProviderError(f"SMTP server {self.host}:{self.port} unreachable ({type(exc).__name__}) after {attempt} attempts") from None
                self.backoff.wait(attempt - 1)
                continue
            try:
                conn.send_message(mime, from_addr=self.sender, to_addrs=[message.to])
            except smtplib.SMTPRecipientsRefused as exc:
                codes = sorted({c for c, _ in exc.recipients.values()})
                raise ProviderError(f"SMTP server refused the recipient (codes {codes})") from None
            except smtplib.SMTPSenderRefused as exc:
                raise ProviderError(f"SMTP server refused the sender ({exc.smtp_code})") from None
            except smtplib.SMTPDataError as exc:
                raise ProviderError(f"SMTP server refused the message ({exc.smtp_code})") from None
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                raise DeliveryUncertain(f"SMTP connection lost while sending ({type(exc).__name__}); the message may have been delivered") from None
            finally:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()
            return

    def _connect(self) -> smtplib.SMTP:
        cls = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
        conn = cls(self.host, self.port, timeout=self.timeout)
        try:
            conn.ehlo_or_helo_if_needed()
            if self.starttls:
                conn.starttls()
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password or "")
        except BaseException:
            conn.close()
            raise
        return conn


# --------------------------------------------------------------------------- SendGrid


class SendGridEmailProvider:
    """Send through the SendGrid v3 Mail Send API with the official ``sendgrid`` package.

    ``host`` points the client elsewhere (the cdsops emulator serves ``/v3/mail/send``).
    429 and 5xx answers are retried with backoff (https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits).
    """

    def __init__(self, api_key: str, sender: str, *, host: str = "https://api.sendgrid.com", backoff: Backoff | None = None):
        if not api_key:
            raise ValueError("SendGrid needs an API key (set it from a secret, never in the inventory)")
        import sendgrid

        self.client = sendgrid.SendGridAPIClient(api_key=api_key, host=host)
        self.sender = sender
        self.backoff = backoff or Backoff(base=1.0, cap=30.0, max_attempts=5)

    def send(self, message: EmailMessage) -> None:
        import urllib.error

        from python_http_client.exceptions import HTTPError as SGHTTPError
        from sendgrid.helpers.mail import CustomArg, Mail

        _check_recipient(message.to)
        mail = Mail(from_email=self.sender, to_emails=message.to, subject=message.subject,
                    plain_text_content=message.text, html_content=message.html)
        if message.key is not None:
            mail.custom_arg = CustomArg("cdsops_notification", str(message.key))
        attempt = 0
        while True:
            try:
                resp = self.client.send(mail)
            except SGHTTPError as exc:
                status = getattr(exc, "status_code", 0)
                if status != 429 and status < 500:
                    raise ProviderError(f"SendGrid refused the message: HTTP {status}") from None
                err = f"HTTP {status}"
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionRefusedError):
                    raise DeliveryUncertain(f"SendGrid connection failed while sending ({type(exc.reason).__name__})") from None
                err = "connection refused"
            except TimeoutError:
                raise DeliveryUncertain("SendGrid did not answer in time; the message may have been accepted") from None
            else:
                if resp.status_code not in (200, 202):
                    raise ProviderError(f"SendGrid answered HTTP {resp.status_code}")
                return
            attempt += 1
            if attempt >= self.backoff.max_attempts:
                raise ProviderError(f"SendGrid still failing after {attempt} attempts ({err})")
            self.backoff.wait(attempt - 1)


# --------------------------------------------------------------------------- ledger

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS notifications (
    student_id BIGINT NOT NULL,
    admission VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    status VARCHAR NOT NULL,          -- sending | sent | failed
    attempts INTEGER NOT NULL,
    claimed_at TIMESTAMP NOT NULL,    -- UTC
    updated_at TIMESTAMP NOT NULL,    -- UTC
    error VARCHAR,                    -- class of the last failure, never an address
    PRIMARY KEY (student_id, admission, kind)
)
"""


class DuckDBLedger:
    """The notification ledger in the ``notifications`` table of a DuckDB file."""

    def __init__(self, path: str | Path | None = None, *, connection: Any = None):
        import duckdb

        if connection is None and path is None:
            raise ValueError("DuckDBLedger needs a path or a connection")
        self._own = connection is None
        self.con = connection if connection is not None else duckdb.connect(str(path))
        self._lock = threading.Lock()
        with self._lock:
            self.con.execute(_LEDGER_DDL)

    def close(self) -> None:
        if self._own:
            self.con.close()

    def __enter__(self) -> DuckDBLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _k(self, key: NotificationKey) -> list[Any]:
        return [key.student_id, key.admission, key.kind]

    def status(self, key: NotificationKey) -> str | None:
        with self._lock:
            row = self.con.execute(
                "SELECT status FROM notifications WHERE student_id = ? AND admission = ? AND kind = ?", self._k(key)
            ).fetchone()
        return row[0] if row else None

    def claim(self, key: NotificationKey) -> bool:
        import duckdb

        now = naive_utcnow()
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                row = self.con.execute(
                    "SELECT status FROM notifications WHERE student_id = ? AND admission = ? AND kind = ?", self._k(key)
                ).fetchone()
                if row is None:
                    self.con.execute(
                        "INSERT INTO notifications VALUES (?, ?, ?, 'sending', 1, ?, ?, NULL)", [*self._k(key), now, now]
                    )
                elif row[0] == "failed":
                    self.con.execute(
                        "UPDATE notifications SET status = 'sending', attempts = attempts + 1, claimed_at = ?, updated_at = ?, error = NULL "
                        "WHERE student_id = ? AND admission = ? AND kind = ?",
                        [now, now, *self._k(key)],
                    )
                else:
                    self.con.execute("ROLLBACK")
                    return False
                self.con.execute("COMMIT")
                return True
            except duckdb.ConstraintException:
                self.con.execute("ROLLBACK")
                return False
            except BaseException:
                self.con.execute("ROLLBACK")
                raise

    def _set(self, key: NotificationKey, status: str, error: str | None) -> None:
        with self._lock:
            self.con.execute(
                "UPDATE notifications SET status = ?, updated_at = ?, error = ? WHERE student_id = ? AND admission = ? AND kind = ?",
                [status, naive_utcnow(), error, *self._k(key)],
            )

    def mark_sent(self, key: NotificationKey) -> None:
        self._set(key, "sent", None)

    def mark_failed(self, key: NotificationKey, error: str) -> None:
        self._set(key, "failed", error[:200])

    def uncertain(self) -> list[NotificationKey]:
        """Notifications left ``sending`` (a crash or a lost connection): check by hand."""
        with self._lock:
            rows = self.con.execute(
                "SELECT student_id, admission, kind FROM notifications WHERE status = 'sending' ORDER BY 1, 2, 3"
            ).fetchall()
        return [NotificationKey(int(s), a, k) for s, a, k in rows]

    def release(self, key: NotificationKey) -> None:
        """Operator decision: an uncertain notification was not delivered; allow a resend."""
        self._set(key, "failed", "released by operator")


# --------------------------------------------------------------------------- notifier


@dataclass(frozen=True)
class NotifyReport:
    sent: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # already sent or in flight
    failed: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {"sent": len(self.sent), "skipped": len(self.skipped), "failed": len(self.failed), "uncertain": len(self.uncertain)}


@dataclass(frozen=True)
class Notification:
    key: NotificationKey
    to: str = field(repr=False)
    context: Mapping[str, Any] = field(repr=False, default_factory=dict)


class Notifier:
    """Render and send notifications, each (student_id, admission, kind) at most once."""

    def __init__(self, provider: Any, ledger: Any, *, defaults: Mapping[str, Any] | None = None, template_dir: Path | None = None):
        self.provider, self.ledger = provider, ledger
        self.defaults = dict(defaults or {})
        self.template_dir = template_dir

    def notify(self, items: Iterable[Notification]) -> NotifyReport:
        sent, skipped, failed, uncertain = [], [], [], []
        errors: dict[str, str] = {}
        for item in items:
            key = item.key
            name = str(key)
            # Render first: a template problem must not leave a claimed row behind.
            msg = render(key.kind, item.to, key, {**self.defaults, **item.context, "student_id": key.student_id}, self.template_dir)
            if not self.ledger.claim(key):
                skipped.append(name)
                log.info("notification %s: already sent or in flight, skipped", name)
                continue
            try:
                self.provider.send(msg)
            except DeliveryUncertain as exc:
                uncertain.append(name)
                errors[name] = str(exc)
                log.warning("notification %s: delivery uncertain, left for review: %s", name, exc)
                continue
            except ProviderError as exc:
                self.ledger.mark_failed(key, str(exc))
                failed.append(name)
                errors[name] = str(exc)
                log.warning("notification %s: failed, will retry next run: %s", name, exc)
                continue
            self.ledger.mark_sent(key)
            sent.append(name)
            log.info("notification %s: sent", name)
        return NotifyReport(tuple(sent), tuple(skipped), tuple(failed), tuple(uncertain), errors)
