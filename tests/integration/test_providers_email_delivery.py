"""Email end to end: SMTP against a local catch-all server this test starts, SendGrid's
official client against the emulator, the DuckDB ledger, and convergence of retried runs
(group sync + welcome mail) without a double send or a doubly-logged change."""

from __future__ import annotations

import email
import email.policy
import logging
import random
import socketserver
import threading
from pathlib import Path

import pytest

from cdsops.emulator import Emulator
from cdsops.providers.base import NotificationKey, ProviderError, QuotaExceeded
from cdsops.providers.email import DuckDBLedger, Notification, Notifier, SendGridEmailProvider, SMTPEmailProvider
from cdsops.providers.google import GoogleGroupProvider, build_service
from cdsops.providers.retry import Backoff

pytestmark = pytest.mark.integration

DEFAULTS = {
    "course_name": "CDS 101",
    "workspace_url": "https://rstudio.example.org/",
    "expires_on": "2027-05-27",
    "support_email": "help@example.org",
    "signature": "The CDS team",
    "registration_url": "https://example.org/register",
}


# --------------------------------------------------------------------------- a catch-all SMTP server


class SMTPSink(socketserver.ThreadingTCPServer):
    """Minimal ESMTP catch-all (RFC 5321 subset) with fault knobs."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SMTPHandler)
        self.lock = threading.Lock()
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse_connections = 0  # answer 421 and close
        self.rcpt_code = 0  # e.g. 550: refuse every recipient
        self.drop_after_data = 0  # store the message, then close without answering
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def __enter__(self) -> SMTPSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class _SMTPHandler(socketserver.StreamRequestHandler):
    server: SMTPSink

    def w(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        srv = self.server
        with srv.lock:
            if srv.refuse_connections > 0:
                srv.refuse_connections -= 1
                self.w("421 sink busy, try later")
                return
        self.w("220 sink ESMTP")
        mail_from, rcpts = "", []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            up = cmd.upper()
            if up.startswith("EHLO"):
                self.w("250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8")
            elif up.startswith("HELO"):
                self.w("250 sink")
            elif up.startswith("MAIL FROM:"):
                mail_from, rcpts = cmd[10:].strip().split()[0].strip("<>"), []
                self.w("250 OK")
            elif up.startswith("RCPT TO:"):
                if srv.rcpt_code:
                    self.w(f"{srv.rcpt_code} mailbox unavailable")
                else:
                    rcpts.append(cmd[8:].strip().strip("<>"))
                    self.w("250 OK")
            elif up == "DATA":
                self.w("354 end with <CRLF>.<CRLF>")
                data = []
                while True:
                    ln = self.rfile.readline()
                    if not ln or ln == b".\r\n":
                        break
                    data.append(ln[1:] if ln.startswith(b"..") else ln)
                with srv.lock:
                    srv.messages.append((mail_from, rcpts, b"".join(data)))
                    if srv.drop_after_data > 0:
                        srv.drop_after_data -= 1
                        return  # accepted, but the answer is lost
                self.w("250 OK queued")
            elif up in ("RSET", "NOOP"):
                self.w("250 OK")
            elif up == "QUIT":
                self.w("221 bye")
                return
            else:
                self.w("502 command not implemented")


@pytest.fixture()
def sink():
    with SMTPSink() as s:
        yield s


@pytest.fixture()
def ledger(tmp_path: Path):
    with DuckDBLedger(tmp_path / "cdsops.duckdb") as led:
        yield led


def smtp(sink: SMTPSink, sleeps: list[float]) -> SMTPEmailProvider:
    return SMTPEmailProvider("127.0.0.1", sink.port, "cds@example.org", backoff=Backoff(sleep=sleeps.append, max_attempts=4))


def items(n: int = 3, kind: str = "welcome") -> list[Notification]:
    return [
        Notification(NotificationKey(i, "2026-11-26T10:00:00Z", kind), f"person{i}@example.org",
                     {"username": f"s{i:06d}", "first_name": f"Name{'abcdefghij'[i]}"})
        for i in range(1, n + 1)
    ]


# --------------------------------------------------------------------------- SMTP


def test_smtp_sends_each_notification_once(sink: SMTPSink, ledger: DuckDBLedger, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    n = Notifier(smtp(sink, []), ledger, defaults=DEFAULTS)
    rep = n.notify(items(3) + items(1, "expiry"))
    assert rep.summary() == {"sent": 4, "skipped": 0, "failed": 0, "uncertain": 0}
    assert len(sink.messages) == 4
    frm, rcpts, raw = sink.messages[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert frm == "cds@example.org" and rcpts == ["person1@example.org"]
    assert msg["To"] == "person1@example.org" and "s000001" in msg["Subject"]
    assert msg["X-Cdsops-Notification"] == "welcome/1/2026-11-26T10:00:00Z"
    assert "Hello Nameb," in msg.get_content()
    again = n.notify(items(3) + items(1, "expiry"))
    assert again.summary() == {"sent": 0, "skipped": 4, "failed": 0, "uncertain": 0}
    assert len(sink.messages) == 4
    # privacy: no address and no name in any log line
    text = caplog.text
    assert "@example.org" not in text and "Nameb" not in text and "welcome/1/" in text


def test_smtp_retries_a_busy_server(sink: SMTPSink, ledger: DuckDBLedger) -> None:
    sink.refuse_connections = 2
    sleeps: list[float] = []
    rep = Notifier(smtp(sink, sleeps), ledger, defaults=DEFAULTS).notify(items(1))
    assert rep.sent == ("welcome/1/2026-11-26T10:00:00Z",) and len(sleeps) == 2 and len(sink.messages) == 1


def test_refused_recipient_fails_cleanly_and_the_next_run_sends(sink: SMTPSink, ledger: DuckDBLedger) -> None:
    sink.rcpt_code = 550
    n = Notifier(smtp(sink, []), ledger, defaults=DEFAULTS)
    rep = n.notify(items(2))
    assert rep.summary()["failed"] == 2 and not sink.messages
    assert "refused the recipient (codes [550])" in rep.errors["welcome/1/2026-11-26T10:00:00Z"]
    assert "@" not in " ".join(rep.errors.values())
    sink.rcpt_code = 0
    assert n.notify(items(2)).summary()["sent"] == 2
    assert n.notify(items(2)).summary()["skipped"] == 2 and len(sink.messages) == 2


def test_lost_answer_after_data_is_never_resent(sink: SMTPSink, ledger: DuckDBLedger) -> None:
    sink.drop_after_data = 1
    n = Notifier(smtp(sink, []), ledger, defaults=DEFAULTS)
    rep = n.notify(items(2))
    assert rep.uncertain == ("welcome/1/2026-11-26T10:00:00Z",) and rep.sent == ("welcome/2/2026-11-26T10:00:00Z",)
    assert len(sink.messages) == 2  # the first one did arrive
    assert n.notify(items(2)).summary() == {"sent": 0, "skipped": 2, "failed": 0, "uncertain": 0}
    assert len(sink.messages) == 2
    assert ledger.uncertain() == [NotificationKey(1, "2026-11-26T10:00:00Z", "welcome")]


def test_unreachable_server_is_a_definite_failure(ledger: DuckDBLedger) -> None:
    with SMTPSink() as s:
        port = s.port  # closed again below: nothing listens there
    p = SMTPEmailProvider("127.0.0.1", port, "cds@example.org", timeout=2, backoff=Backoff(sleep=lambda _s: None, max_attempts=2))
    rep = Notifier(p, ledger, defaults=DEFAULTS).notify(items(1))
    assert rep.summary()["failed"] == 1 and "unreachable" in rep.errors["welcome/1/2026-11-26T10:00:00Z"]
    assert ledger.status(NotificationKey(1, "2026-11-26T10:00:00Z", "welcome")) == "failed"


def test_invalid_recipient_is_refused_before_sending(sink: SMTPSink) -> None:
    from cdsops.providers.base import EmailMessage

    with pytest.raises(ProviderError, match="recipient address is invalid"):
        smtp(sink, []).send(EmailMessage(to="not an address", subject="s", text="t"))
    assert not sink.messages


# --------------------------------------------------------------------------- SendGrid (official client) against the emulator


def sendgrid(emu: Emulator, sleeps: list[float]) -> SendGridEmailProvider:
    return SendGridEmailProvider("SG.test-key", "cds@example.org", host=emu.url, backoff=Backoff(sleep=sleeps.append))


def test_sendgrid_sends_once_through_retries(ledger: DuckDBLedger) -> None:
    sleeps: list[float] = []
    with Emulator() as emu:
        emu.add_fault({"kind": "429", "match": "sendgrid.send", "times": 2})
        emu.add_fault({"kind": "503", "match": "sendgrid.send", "skip": 1, "times": 1})
        n = Notifier(sendgrid(emu, sleeps), ledger, defaults=DEFAULTS)
        rep = n.notify(items(3))
        assert rep.summary()["sent"] == 3 and len(sleeps) == 3
        mails = emu.mail
        assert [m["personalizations"][0]["to"][0]["email"] for m in mails] == [f"person{i}@example.org" for i in (1, 2, 3)]
        assert mails[0]["from"]["email"] == "cds@example.org" and "s000001" in mails[0]["subject"]
        assert mails[0]["custom_args"] == {"cdsops_notification": "welcome/1/2026-11-26T10:00:00Z"}
        assert mails[0]["content"][0]["type"] == "text/plain"
        assert n.notify(items(3)).summary()["skipped"] == 3 and len(emu.mail) == 3


def test_sendgrid_client_errors_are_not_retried(ledger: DuckDBLedger) -> None:
    sleeps: list[float] = []
    with Emulator() as emu:
        bad = SendGridEmailProvider("SG.k", "cds@example.org", host=emu.url, backoff=Backoff(sleep=sleeps.append))
        bad.client.api_key = ""  # sends "Authorization: Bearer " with no key -> 401
        bad.client.client.request_headers["Authorization"] = "Basic nope"
        rep = Notifier(bad, ledger, defaults=DEFAULTS).notify(items(1))
        assert rep.summary()["failed"] == 1 and "HTTP 401" in rep.errors["welcome/1/2026-11-26T10:00:00Z"] and not sleeps
    with pytest.raises(ValueError, match="API key"):
        SendGridEmailProvider("", "cds@example.org")


# --------------------------------------------------------------------------- convergence of retried runs


def test_retried_runs_converge_without_double_mail_or_double_change(tmp_path: Path) -> None:
    """A run = sync the group, then send a welcome to each member added. Faults break the
    first runs at different points; rerunning converges, each member is added (and so logged)
    exactly once, and each welcome is sent exactly once."""
    desired = {i: f"student{i:04d}@example.org" for i in range(1, 301)}
    change_log: list[str] = []  # what the caller records: one line per change
    with Emulator() as emu, DuckDBLedger(tmp_path / "l.duckdb") as ledger:
        emu.create_group("data@example.org")
        emu.add_fault({"kind": "503", "match": "directory.members.insert", "skip": 50, "times": 750})  # run 1 gives up after 50
        emu.add_fault({"kind": "dailyLimitExceeded", "match": "directory.members.insert", "skip": 150, "times": 1})  # not retried: the run stops cleanly
        emu.add_fault({"kind": "503", "match": "sendgrid.send", "times": 4})
        emu.add_fault({"kind": "429", "match": "sendgrid.send", "skip": 50, "times": 1})
        sleeps: list[float] = []
        backoff = Backoff(sleep=sleeps.append, rng=random.Random(3), max_attempts=3)
        group = GoogleGroupProvider("data@example.org", build_service("directory", emulator=emu.url), backoff=backoff, batch_size=50)
        mailer = Notifier(SendGridEmailProvider("SG.k", "cds@example.org", host=emu.url, backoff=backoff), ledger, defaults=DEFAULTS)
        by_identity = {v: k for k, v in desired.items()}
        stopped: list[str] = []
        for run in range(8):
            try:
                rep = group.sync(desired.values())
            except (QuotaExceeded, ProviderError) as exc:
                stopped.append(type(exc).__name__)
                rep = exc.report
                change_log += [f"add {by_identity[a]}" for a in rep.added]
                continue  # the run stops; mail waits for a run whose sync succeeded
            change_log += [f"add {by_identity[a]}" for a in rep.added]
            members = set(emu.members("data@example.org"))
            mailer.notify(
                Notification(NotificationKey(i, "2026-11-26", "welcome"), addr, {"username": f"s{i:06d}"})
                for i, addr in sorted(desired.items()) if addr in members
            )
            if run >= 2 and not rep.changed and not ledger.uncertain():
                break
        assert emu.members("data@example.org") == sorted(desired.values())
        assert sorted(change_log) == sorted(f"add {i}" for i in desired)  # every change logged exactly once
        sent_to = [m["personalizations"][0]["to"][0]["email"] for m in emu.mail]
        assert sorted(sent_to) == sorted(desired.values())  # every welcome exactly once
        assert all(f.exhausted for f in emu.state.faults)
        assert "QuotaExceeded" in stopped and "ProviderError" in stopped  # both ways a run can stop were exercised
