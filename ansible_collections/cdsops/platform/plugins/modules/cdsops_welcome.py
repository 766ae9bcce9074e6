#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cdsops contributors; Apache-2.0
"""Ansible module: send the due welcome / re-admission / expiry emails, each at most once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cdsops_welcome
short_description: Send the plan's due notifications through the cdsops email provider and ledger
description:
  - Runs on the management host with the cdsops package (addresses never leave it). For each
    due notification (C(student_id), C(admission), C(kind)) it looks the address up in the
    store's profiles, renders the template and sends it through the configured provider
    (C(providers.email) of the cdsops configuration, SMTP or SendGrid), recording it in the
    notification ledger that lives next to the roster (the C(notifications) table of the DuckDB
    store, or of the BigQuery dataset of a C(bigquery://PROJECT/DATASET) store), so each
    (student, admission, kind) is sent at most once even across crashed runs.
  - With I(outbox), messages are written as C(.eml) files into that directory instead of being
    sent (the embedded default and the demo, with no mail server and no network).
  - Check mode reports what would be sent and sends nothing. Results carry usernames and
    notification keys only, never an address or a name.
version_added: "0.1.0"
author: cdsops contributors (@cdsops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff lists one line per message sent (its kind and the username).
  platform:
    platforms: posix
options:
  store:
    description:
      - The roster store, as for C(cdsops --roster) (a DuckDB file path, C(duckdb:PATH), or
        C(bigquery://PROJECT/DATASET)); its notification ledger is used.
    type: str
    required: true
  config:
    description: The cdsops configuration file.
    type: path
  notifications:
    description: Due notifications from the plan (C(student_id), C(username), C(admission), C(kind)).
    type: list
    elements: dict
    default: []
  outbox:
    description: Write messages as files here instead of sending them.
    type: path
  context:
    description: Template values (C(course_name), C(workspace_url), C(support_email), C(signature), C(registration_url)).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Welcome emails
  cdsops_welcome:
    store: /var/lib/cdsops/roster.duckdb
    notifications: "{{ cdsops_notifications }}"
    context: {course_name: CDS 101, workspace_url: "https://ide.example.org"}
"""

RETURN = r"""
changes:
  description: One item per message sent (C(kind) email.welcome / email.readmission / email.expiry, C(username)).
  returned: always
  type: list
  elements: dict
report:
  description: Counts of sent, skipped (already sent or in flight), failed, uncertain.
  returned: always
  type: dict
"""

import email.generator
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

_DEFAULT_CONTEXT = {
    "course_name": "the course",
    "workspace_url": "https://localhost",
    "support_email": "support@localhost",
    "signature": "The course team",
    "registration_url": "https://localhost/register",
}


def open_ledger(store):
    """The notification ledger next to the roster store ``store`` (DuckDB file or BigQuery dataset)."""
    from cdsops.providers.factory import ledger_for_store

    return ledger_for_store(store)


def close_ledger(ledger):
    close = getattr(ledger, "close", None)
    if close is not None:
        close()


class FileOutbox(object):
    """An email provider that writes each message as an .eml file (embedded default, demo)."""

    def __init__(self, directory, sender="cds@localhost"):
        self.directory, self.sender = directory, sender
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def send(self, message):
        import email.message as em

        msg = em.EmailMessage()
        msg["From"] = self.sender
        msg["To"] = message.to
        msg["Subject"] = message.subject
        msg.set_content(message.text)
        name = str(message.key).replace("/", "-") + ".eml" if message.key else "message.eml"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            email.generator.Generator(fh).flatten(msg)
        os.chmod(tmp, 0o600)
        os.replace(tmp, os.path.join(self.directory, name))


def _due(module, notifications):
    """The plan's notifications as (student_id, username, admission, kind) tuples."""
    due = []
    for i, n in enumerate(notifications):
        try:
            due.append((int(n["student_id"]), str(n["username"]), int(n["admission"]), str(n["kind"])))
        except (KeyError, TypeError, ValueError):
            module.fail_json(msg="notifications[%d] needs student_id, username, admission and kind" % i)
    return due


def _messages(due, students, profiles, key_type, message_type, given_name, iso):
    """(messages, usernames without an address, {key: due tuple}): the address comes from the
    profile, the template context holds the username, a plain given name and the expiry date."""
    items, missing, by_key = [], [], {}
    for sid, username, adm, kind in due:
        prof = profiles.get(sid)
        if prof is None or not prof.email:
            missing.append(username)
            continue
        key = key_type(sid, str(adm), kind)
        st = students.get(sid)
        ctx = {"username": username, "first_name": given_name(prof.full_name),
               "expires_on": iso(st.expires_at)[:10] if st else ""}
        items.append(message_type(key, prof.email, ctx))
        by_key[str(key)] = (sid, username, adm, kind)
    return items, missing, by_key


def main():
    module = AnsibleModule(
        argument_spec=dict(
            store=dict(type="str", required=True),
            config=dict(type="path"),
            notifications=dict(type="list", elements="dict", default=[]),
            outbox=dict(type="path"),
            context=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        from cdsops.config import load_config
        from cdsops.providers.base import NotificationKey
        from cdsops.providers.email import Notification, Notifier, given_name
        from cdsops.providers.factory import email_provider
        from cdsops.roster import iso
        from cdsops.store import open_store
    except ImportError as exc:
        module.fail_json(msg="cdsops_welcome needs the cdsops package (run it on the management host with its venv python): %s" % exc)
    due = _due(module, p["notifications"])
    if not due:
        module.exit_json(changed=False, changes=[], report={"sent": 0, "skipped": 0, "failed": 0, "uncertain": 0})
    if module.check_mode:
        changes = [{"kind": "email." + k, "username": u, "student_id": s, "before": None, "after": {"admission": a}} for s, u, a, k in due]
        module.exit_json(changed=True, changes=changes, report={"would_send": len(due)}, **_diff(module, changes))
    try:
        cfg = load_config(p["config"])
        store = open_store(p["store"])
        students = dict((s.student_id, s) for s in store.load_existing().students)
        profiles = store.profiles([d[0] for d in due])
        provider = FileOutbox(p["outbox"]) if p["outbox"] else email_provider(cfg)
    except Exception as exc:
        module.fail_json(msg="%s: %s" % (exc.__class__.__name__, exc))
    context = dict(_DEFAULT_CONTEXT)
    context.update((cfg.extra.get("email_context") or {}))
    context.update(p["context"] or {})
    items, missing, by_key = _messages(due, students, profiles, NotificationKey, Notification, given_name, iso)
    try:
        ledger = open_ledger(p["store"])
    except Exception as exc:
        module.fail_json(msg="cannot open the notification ledger of %s: %s: %s" % (p["store"], exc.__class__.__name__, exc))
    try:
        report = Notifier(provider, ledger, defaults=context).notify(items)
    except Exception as exc:
        module.fail_json(msg="%s: %s" % (exc.__class__.__name__, exc))
    finally:
        close_ledger(ledger)
    changes = []
    for name in report.sent:
        sid, username, adm, kind = by_key[name]
        changes.append({"kind": "email." + kind, "username": username, "student_id": sid, "before": None, "after": {"admission": adm}})
    out = dict(changed=bool(report.sent), changes=changes, report=dict(report.summary(), no_address=len(missing)),
               errors=report.errors)
    out.update(_diff(module, changes))
    if report.failed or report.uncertain:
        module.fail_json(msg="%d notification(s) failed, %d uncertain (the next run retries the failed ones)" % (
            len(report.failed), len(report.uncertain)), **out)
    module.exit_json(**out)


def _diff(module, changes):
    """With --diff: one line per message (kind and username; never an address or a name)."""
    if not module._diff or not changes:
        return {}
    after = "".join("%s %s\n" % (c["kind"], c["username"]) for c in changes)
    return {"diff": {"before": "", "after": after, "before_header": "emails sent", "after_header": "emails sent"}}


if __name__ == "__main__":
    main()
