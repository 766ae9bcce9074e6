"""Canonical identity of a registrant: the one key everything downstream uses.

Rules (design step 2):
- trim surrounding whitespace, lower-case;
- for ``gmail.com`` and ``googlemail.com``: drop every dot and any ``+tag`` from the
  local part and use ``gmail.com`` (Google treats them as one mailbox);
- other domains keep their local part as written (lower-cased): we cannot know their
  aliasing rules.

Addresses are validated against the RFC 5321/5322 limits that matter here: one ``@``,
a local part of 1-64 characters of unquoted ``atext`` and single dots, a domain of
at most 253 characters in LDH labels (each 1-63) with a dot, and at most 254
characters in all. Quoted local parts, IP-literal domains, control characters and
non-ASCII addresses are refused: no Google account has one.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["InvalidEmail", "canonicalize", "identity_hash", "GMAIL_DOMAINS", "MAX_EMAIL_LENGTH"]

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
MAX_EMAIL_LENGTH = 254  # RFC 5321 4.5.3.1.3: a 256-octet path including "<" and ">"
MAX_LOCAL_LENGTH = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN_LENGTH = 253  # RFC 1035, without the trailing dot

_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_RE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# LDH labels joined by dots; the last (top-level) label is not all digits
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+(?=[a-z0-9-]*[a-z-])[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FAST_RE = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+(?=[a-z0-9-]*[a-z-])[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?)\Z", re.ASCII)
_BAD_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]")


class InvalidEmail(ValueError):
    """The address cannot be a registrant's identity; ``str()`` says why."""


def canonicalize(email: object) -> str:
    """Return the canonical identity of ``email`` or raise :class:`InvalidEmail`.

    Non-ASCII is refused before any case folding: ``str.lower()`` maps some non-ASCII
    letters onto ASCII ones (KELVIN SIGN ``\u212a`` becomes ``k``), which would make
    another person's address out of one no mailbox has."""
    if email is None:
        raise InvalidEmail("email is missing")
    if not isinstance(email, str):
        raise InvalidEmail(f"email must be text, not {type(email).__name__}")
    value = email.strip()
    if not value.isascii():
        _check_text(value)  # control characters and whitespace are named first
        raise InvalidEmail("email contains non-ASCII characters")
    value = value.lower()
    m = _FAST_RE.match(value)
    if m is not None and len(value) <= MAX_EMAIL_LENGTH:
        # the common case in one regex; anything unusual takes the path below, which says why
        local, domain = m.groups()
        if len(local) <= MAX_LOCAL_LENGTH and len(domain) <= MAX_DOMAIN_LENGTH:
            if domain not in GMAIL_DOMAINS:
                return value
            local = local.split("+", 1)[0].replace(".", "")
            if local:
                return local + "@gmail.com"
    _check_text(value)
    return _canonical_parts(*_split(value))


def _check_text(value: str) -> None:
    """Refuse an empty address, control characters, whitespace and over-long addresses."""
    if not value:
        raise InvalidEmail("email is missing")
    bad = _BAD_RE.search(value)
    if bad:
        if _CONTROL_RE.match(bad.group()):
            raise InvalidEmail("email contains control characters")
        raise InvalidEmail("email contains whitespace")
    if len(value) > MAX_EMAIL_LENGTH:
        raise InvalidEmail(f"email is longer than {MAX_EMAIL_LENGTH} characters ({len(value)})")


def _split(value: str) -> tuple[str, str]:
    """The local part and the domain of a lower-case ASCII address, each checked."""
    if value.count("@") != 1:
        raise InvalidEmail("email must contain exactly one '@'")
    local, domain = value.split("@")
    if not local:
        raise InvalidEmail("email has an empty local part")
    if len(local) > MAX_LOCAL_LENGTH:
        raise InvalidEmail(f"email local part is longer than {MAX_LOCAL_LENGTH} characters")
    if not _LOCAL_RE.match(local):
        raise InvalidEmail("email local part has characters or dots that are not allowed")
    if domain.endswith(".") and not domain.endswith(".."):
        domain = domain[:-1]  # a fully qualified name's root dot
    if not domain:
        raise InvalidEmail("email has an empty domain")
    if len(domain) > MAX_DOMAIN_LENGTH:
        raise InvalidEmail(f"email domain is longer than {MAX_DOMAIN_LENGTH} characters")
    if "." not in domain:
        raise InvalidEmail("email domain must contain a dot")
    if not _DOMAIN_RE.match(domain):
        raise InvalidEmail("email domain is malformed")
    return local, domain


def _canonical_parts(local: str, domain: str) -> str:
    if domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            raise InvalidEmail("email has an empty local part once its +tag is removed")
        domain = "gmail.com"
    return f"{local}@{domain}"


def identity_hash(identity: str, key: bytes) -> str:
    """Keyed hash (HMAC-SHA256, hex) of a canonical identity.

    This is what may leave the management store (the sign-in map on the compute host,
    audit lines): it identifies a person only to someone who holds ``key``.
    """
    return hmac.new(key, identity.encode("utf-8"), hashlib.sha256).hexdigest()
