#!/usr/bin/env bash
# Host audit test: the baseline role's audit rules, loaded into this machine's kernel.
# (auditd cannot run in a container, so Molecule only renders them; see docs/roles.md.)
exec bash "$(dirname "$0")/../audit/audit-rules-test.sh" "$@"
