"""The gate's pages: plain, accessible HTML; no scripts, no tracking, no external assets."""

from __future__ import annotations

from html import escape

__all__ = ["render", "PAGES"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;"
    "line-height:1.5;color:#111;background:#fff}a{color:#0645ad}"
    "p.who{color:#444;font-size:.95em}"
)

# outcome -> (HTTP status, title, paragraphs); paragraphs are HTML with {placeholders}
PAGES: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "unknown": (403, "No registration found", (
        "We could not find a registration for this Google account for {course}.",
        'To get access, <a href="{registration_url}">fill in the registration form</a> '
        "with this Google account.",
        "A registration takes a few minutes to be processed. If you registered just now, "
        '<a href="{login_url}">try again</a> in a few minutes.',
    )),
    "expired": (403, "Your access has expired", (
        "Your access to {course} has expired.",
        'To continue, <a href="{registration_url}">register again</a> with this Google account. '
        "Your files are kept: you will get back the same account with everything in it.",
        "A registration takes a few minutes to be processed.",
    )),
    "preparing": (403, "Your access is being prepared", (
        "Thank you for registering for {course}. Your account and access to the course data "
        "are being prepared{ready_text}.",
        'Please <a href="{login_url}">try again</a> in a few minutes.',
    )),
    "unverified": (403, "Email address not verified", (
        "Google has not verified the email address of this account, so we cannot tell "
        "whose account it is.",
        "Verify the address in your Google account settings, or sign in with the account "
        'you registered with, then <a href="{login_url}">try again</a>.',
    )),
    "subject_mismatch": (403, "This Google account cannot open this course account", (
        "The email address of this Google account is registered for {course}, but the course "
        "account was first opened with a different Google account that had the same address "
        "(for example, the address was given to someone else, or the account was deleted and "
        "created again). To protect the student's files and data, we cannot let this account in.",
        "If this is your registration, contact {support}, with the time you tried: support can "
        "see what happened and, once they have checked it is you, let this account in.",
    )),
    "error": (400, "Sign-in could not be completed", (
        "Something went wrong while signing you in (the sign-in may have taken too long, "
        "or was started in another tab).",
        '<a href="{login_url}">Start again</a>.{support_text}',
    )),
    "signed_out": (200, "Signed out", (
        "You are signed out of {course}.",
        'To sign out of Google as well, use your Google account menu. <a href="{login_url}">Sign in again</a>.',
    )),
}


def render(outcome: str, *, course: str, registration_url: str, login_url: str,
           signed_in_as: str | None = None, ready_at_text: str | None = None,
           support_contact: str = "") -> tuple[int, str]:
    status, title, paragraphs = PAGES[outcome]
    values = {
        "course": escape(course),
        "registration_url": escape(registration_url, quote=True),
        "login_url": escape(login_url, quote=True),
        "ready_text": f" (expected by {escape(ready_at_text)})" if ready_at_text else "",
        "support_text": f" If it keeps happening, contact {escape(support_contact)}." if support_contact else "",
        "support": escape(support_contact) if support_contact else "the course's support team",
    }
    body = "\n".join(f"<p>{p.format(**values)}</p>" for p in paragraphs)
    who = ""
    if signed_in_as:
        who = f'\n<p class="who">You signed in with Google as {escape(signed_in_as)}.</p>'
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n{body}{who}\n</main>\n</body>\n</html>\n"
    )
    return status, html
