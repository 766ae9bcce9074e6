# -*- coding: utf-8 -*-
# Copyright: cdsops contributors. Apache-2.0.
"""Target-side helpers for the account databases in ``/etc`` (standard library only).

This file runs on the managed host inside Ansible modules, so it imports nothing outside
the Python standard library.

What it provides:

* :func:`lock` - the same locks shadow-utils takes (``useradd``, ``groupadd``,
  ``gpasswd``...): glibc's ``lckpwdf()`` lock, an ``fcntl`` write lock on
  ``/etc/.pwd.lock`` (opened ``O_WRONLY|O_CREAT``, mode 0600, 15 s timeout), plus
  shadow-utils' per-file ``<file>.lock`` hard-link locks (``commonio_lock_nowait``: write
  the pid to ``<file>.<pid>``, ``link()`` it to ``<file>.lock``; a lock whose pid is dead is
  stale and removed). Holding both means a concurrent ``useradd`` waits for us and we wait
  for it.
* :class:`EtcFile` - parser/serializer for ``passwd``, ``group``, ``shadow`` and
  ``gshadow``. Lines that are not well-formed entries (comments, blank lines, NIS ``+``/``-``
  lines, lines with the wrong field count) are kept byte for byte, and so is every entry
  that was not changed.
* :func:`atomic_write` - write a temp file in the same directory, fsync it, give it the
  old file's owner and mode, keep the old content as ``<file>-`` (the backup shadow-utils
  writes), rename over the file, fsync the directory.
* :func:`set_group_members` - make a group's member list (in ``group`` and, when the
  group has an entry there, ``gshadow``) equal a given set; returns before/after, supports
  check mode.

Every function takes ``root`` (default ``/``) so tests can run on a temporary tree.
"""

from __future__ import absolute_import, division, print_function

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
import threading
import time

__all__ = [
    "EtcError",
    "LockTimeout",
    "GroupNotFound",
    "FIELDS",
    "EtcFile",
    "etc_path",
    "lock",
    "read",
    "write",
    "atomic_write",
    "set_group_members",
    "write_group_members",
    "remove_stale_temps",
    "valid_name",
]

# Number of ':'-separated fields per database (passwd(5), group(5), shadow(5), gshadow(5)).
FIELDS = {"passwd": 7, "group": 4, "shadow": 9, "gshadow": 4}
# Mode and group used when a file does not exist yet (Debian's defaults).
_DEFAULT_MODE = {"passwd": 0o644, "group": 0o644, "shadow": 0o640, "gshadow": 0o640}
_SECRET = frozenset({"shadow", "gshadow"})

PWD_LOCK = "etc/.pwd.lock"  # glibc shadow/lckpwdf.c: PWD_LOCKFILE
LOCK_TIMEOUT = 15.0  # glibc lckpwdf.c: TIMEOUT 15 seconds

# shadow-utils' default (useradd/groupadd accept more; we refuse what could break parsing).
_NAME_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\$?\Z")


class EtcError(Exception):
    """A problem with the account databases; ``str()`` says what."""


class LockTimeout(EtcError):
    """Another program holds the account database lock for too long."""


class GroupNotFound(EtcError):
    """The group has no entry in the group file."""


def valid_name(name):
    """True when ``name`` is a user or group name this module will write."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and not name.startswith("-")


def etc_path(root, kind):
    if kind not in FIELDS:
        raise EtcError("unknown account database %r (expected one of %s)" % (kind, ", ".join(sorted(FIELDS))))
    return os.path.join(root or "/", "etc", kind)


# --------------------------------------------------------------------------- locking


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _file_lock_nowait(path):
    """shadow-utils commonio_lock_nowait(): ``<path>.lock`` made by link(); True on success."""
    lockname = path + ".lock"
    pid = os.getpid()
    tmpname = "%s.%d" % (path, pid)
    fd = os.open(tmpname, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, ("%d" % pid).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        for _attempt in range(2):
            try:
                os.link(tmpname, lockname)
                return True
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
            # The lock exists: remove it if its owner is dead (shadow-utils does the same).
            try:
                with open(lockname, "rb") as fh:
                    other = int(fh.read(32).strip() or b"0")
            except (OSError, ValueError):
                return False
            if other <= 0 or other == pid or _pid_alive(other):
                return False
            try:
                os.unlink(lockname)
            except OSError:
                return False
        return False
    finally:
        try:
            os.unlink(tmpname)
        except OSError:
            pass


# atomic_write's temporary files (mkstemp: ".passwd." + 8 characters, ".passwd-." for the backup)
_TEMP_RE = re.compile(r"^\.(passwd|group|shadow|gshadow)-?\.[a-z0-9_]{8}$")


def remove_stale_temps(root):
    """Remove the temporary files a killed writer left in ``etc`` (a copy of shadow among them).
    Called with the lock held: every writer holds it while its temporary file exists, so any
    such file found then is stale. Returns the names removed."""
    directory = os.path.dirname(etc_path(root, "passwd"))
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in sorted(names):
        if _TEMP_RE.match(name):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


# fcntl locks belong to the process, not the thread: serialize threads of this process too.
_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def lock(root="/", kinds=("passwd", "group", "shadow", "gshadow"), timeout=LOCK_TIMEOUT, poll=0.05):
    """Hold the shadow-utils locks on the account databases of ``root``.

    Raises :class:`LockTimeout` after ``timeout`` seconds. Not re-entrant.
    """
    root = root or "/"
    deadline = time.monotonic() + timeout
    if not _THREAD_LOCK.acquire(timeout=max(0.0, timeout)):
        raise LockTimeout("timed out after %.0f s waiting for another thread of this process" % timeout)
    try:
        with _lock(root, kinds, deadline, timeout, poll):
            yield
    finally:
        _THREAD_LOCK.release()


@contextlib.contextmanager
def _lock(root, kinds, deadline, timeout, poll):
    lockfile = os.path.join(root, PWD_LOCK)
    fd = os.open(lockfile, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    held = []
    try:
        while True:
            try:
                # fcntl(F_SETLK, F_WRLCK) on the whole file, exactly like lckpwdf().
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout("timed out after %.0f s waiting for %s (another account tool holds it)" % (timeout, lockfile)) from None
                time.sleep(poll)
        remove_stale_temps(root)
        for kind in kinds:
            path = etc_path(root, kind)
            if not os.path.exists(path):
                continue
            while not _file_lock_nowait(path):
                if time.monotonic() >= deadline:
                    raise LockTimeout("timed out after %.0f s waiting for %s.lock" % (timeout, path))
                time.sleep(poll)
            held.append(path + ".lock")
        yield
    finally:
        for name in reversed(held):
            try:
                os.unlink(name)
            except OSError:
                pass
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- parsing


class EtcFile(object):
    """One account database as a list of lines; entries are addressable by name.

    ``lines`` holds, per line, either ``[raw, None]`` (kept verbatim) or ``[raw, fields]``
    (an entry; ``raw`` is ``None`` once the entry is changed, then it is re-serialized).
    """

    def __init__(self, kind, lines=None, final_newline=True):
        if kind not in FIELDS:
            raise EtcError("unknown account database %r" % (kind,))
        self.kind = kind
        self.nfields = FIELDS[kind]
        self._lines = lines if lines is not None else []
        self.final_newline = final_newline
        self._index = None

    # -- parsing / serializing
    @classmethod
    def parse(cls, kind, text):
        if kind not in FIELDS:
            raise EtcError("unknown account database %r" % (kind,))
        n = FIELDS[kind]
        final_newline = text.endswith("\n") or text == ""
        body = text[:-1] if text.endswith("\n") else text
        lines = []
        if body or text == "\n":
            for raw in body.split("\n"):
                fields = raw.split(":")
                if len(fields) == n and fields[0] and fields[0][0] not in "#+-" and "\r" not in raw:
                    lines.append([raw, fields])
                else:
                    lines.append([raw, None])
        return cls(kind, lines, final_newline)

    def serialize(self):
        out = []
        for raw, fields in self._lines:
            out.append(raw if raw is not None else ":".join(fields))
        text = "\n".join(out)
        if out and self.final_newline:
            text += "\n"
        return text

    # -- access
    def _build_index(self):
        idx = {}
        for i, (_raw, fields) in enumerate(self._lines):
            if fields is not None and fields[0] not in idx:
                idx[fields[0]] = i  # the first entry wins, as getpwnam() does
        self._index = idx
        return idx

    @property
    def index(self):
        return self._index if self._index is not None else self._build_index()

    def names(self):
        return [f[0] for _r, f in self._lines if f is not None]

    def entries(self):
        """List of field lists (copies) of every well-formed entry, in file order."""
        return [list(f) for _r, f in self._lines if f is not None]

    def get(self, name):
        i = self.index.get(name)
        return None if i is None else list(self._lines[i][1])

    def __contains__(self, name):
        return name in self.index

    def __len__(self):
        return len(self.index)

    def set(self, fields):
        """Replace the entry named ``fields[0]`` or append it; returns True when it changed."""
        fields = [str(f) for f in fields]  # plain str (also for str subclasses)
        if len(fields) != self.nfields:
            raise EtcError("%s entry needs %d fields, got %d" % (self.kind, self.nfields, len(fields)))
        idx = self.index
        i = idx.get(fields[0])
        if i is not None and self._lines[i][1] == fields:
            return False  # fast path: already there, exactly
        joined = ":".join(fields)
        if joined.count(":") != self.nfields - 1 or "\n" in joined or "\r" in joined:
            bad = [f for f in fields if ":" in f or "\n" in f or "\r" in f]
            raise EtcError("%s entry field %r contains ':' or a line break" % (self.kind, bad[0]))
        if not valid_name(fields[0]):
            raise EtcError("invalid name %r for a %s entry" % (fields[0], self.kind))
        if i is None:
            self._lines.append([None, fields])
            idx[fields[0]] = len(self._lines) - 1
            return True
        self._lines[i] = [None, fields]
        return True

    def remove(self, name):
        """Remove the entry ``name`` (every entry of that name); True when something was removed."""
        before = len(self._lines)
        self._lines = [ln for ln in self._lines if ln[1] is None or ln[1][0] != name]
        self._index = None
        return len(self._lines) != before


def read(root, kind, missing_ok=True):
    path = etc_path(root, kind)
    try:
        with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            return EtcFile.parse(kind, fh.read())
    except IOError as exc:
        if exc.errno == errno.ENOENT and missing_ok:
            return EtcFile(kind)
        raise


# --------------------------------------------------------------------------- writing


def _fsync_dir(dirname):
    fd = os.open(dirname, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(dirname, prefix, data, mode, uid, gid):
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=dirname)
    try:
        os.fchmod(fd, 0o600)  # never readable by others while it is being written
        if uid is not None and os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def atomic_write(path, data, backup=True, default_mode=0o644, default_group=None):
    """Replace ``path`` with ``data`` (bytes or str) atomically.

    The new file gets the old file's owner and mode (``default_mode`` and root:``default_group``
    when it is new). With ``backup``, the old content is first written, also atomically, to
    ``path + '-'`` with the same owner and mode (as shadow-utils does).
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    dirname = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        st = os.stat(path)
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        exists = True
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        exists = False
        mode, uid = default_mode, 0
        gid = 0
        if default_group is not None:
            try:
                import grp

                gid = grp.getgrnam(default_group).gr_gid
            except KeyError:
                gid = 0
    if backup and exists:
        with open(path, "rb") as fh:
            old = fh.read()
        tmpb = _write_temp(dirname, "." + base + "-.", old, mode, uid, gid)
        os.rename(tmpb, path + "-")
    tmp = _write_temp(dirname, "." + base + ".", data, mode, uid, gid)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(dirname)


def write(root, etcfile, backup=True):
    """Write an :class:`EtcFile` to its place under ``root`` (caller holds :func:`lock`)."""
    atomic_write(
        etc_path(root, etcfile.kind),
        etcfile.serialize(),
        backup=backup,
        default_mode=_DEFAULT_MODE[etcfile.kind],
        default_group="shadow" if etcfile.kind in _SECRET else None,
    )


# --------------------------------------------------------------------------- group members


def _split_members(field):
    return [m for m in field.split(",") if m] if field else []


def set_group_members(root, group, members, check_mode=False, lock_timeout=LOCK_TIMEOUT):
    """Make the members of ``group`` exactly ``members`` (user names).

    Returns ``{"changed": bool, "before": [...], "after": [...]}`` with sorted lists.
    The ``group`` file and, when the group has an entry there, ``gshadow`` are updated in one
    locked pass; nothing is written when the member set is already right (order is ignored)
    or in ``check_mode``. Raises :class:`GroupNotFound` or :class:`EtcError`.
    """
    if not valid_name(group):
        raise EtcError("invalid group name %r" % (group,))
    wanted = sorted(set(members))
    bad = [m for m in wanted if not valid_name(m)]
    if bad:
        raise EtcError("invalid user name(s) for group %s: %s" % (group, ", ".join(repr(b) for b in bad[:5])))
    root = root or "/"

    def _compute():
        gfile = read(root, "group")
        entry = gfile.get(group)
        if entry is None:
            raise GroupNotFound("group %s does not exist in %s" % (group, etc_path(root, "group")))
        before = sorted(set(_split_members(entry[3])))
        return gfile, entry, before

    if check_mode:
        _g, _e, before = _compute()
        return {"changed": before != wanted, "before": before, "after": wanted}

    with lock(root, kinds=("group", "gshadow"), timeout=lock_timeout):
        gfile, entry, before = _compute()
        return write_group_members(root, gfile, entry, before, wanted)


def write_group_members(root, gfile, entry, before, wanted):
    """Write ``wanted`` as the members of the group ``entry`` of ``gfile`` (read under the lock
    the caller holds), in ``group`` and, when the group is there, ``gshadow``."""
    group = entry[0]
    gs_path = etc_path(root, "gshadow")
    gsfile = read(root, "gshadow") if os.path.exists(gs_path) else None
    gs_entry = gsfile.get(group) if gsfile is not None else None
    gs_before = sorted(set(_split_members(gs_entry[3]))) if gs_entry is not None else None
    joined = ",".join(wanted)
    changed = False
    if before != wanted:
        entry[3] = joined
        gfile.set(entry)
        changed = True
    gs_changed = gs_entry is not None and gs_before != wanted
    if gs_changed:
        gs_entry[3] = joined
        gsfile.set(gs_entry)
    # gshadow first, then group: the same order gpasswd uses.
    if gs_changed:
        write(root, gsfile)
    if changed:
        write(root, gfile)
    return {"changed": changed or gs_changed, "before": before, "after": wanted}
