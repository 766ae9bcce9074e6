"""A local emulator of the Google APIs cdsops calls, faithful enough for the official clients.

It serves, on one loopback port, with the paths of the real services:

* Admin SDK Directory API ``members.list`` / ``members.insert`` / ``members.delete``
  (``/admin/directory/v1/groups/{groupKey}/members``),
* Cloud Resource Manager v3 ``projects.getIamPolicy`` / ``projects.setIamPolicy``
  (``/v3/projects/{project}:getIamPolicy``), v1 paths too (``/v1/projects/{p}:getIamPolicy``),
* BigQuery v2 ``datasets.get`` / ``datasets.patch`` / ``datasets.update``
  (``/bigquery/v2/projects/{p}/datasets/{d}``),
* the batch endpoints (``/batch``, ``/batch/bigquery/v2``, ``multipart/mixed``),
* SendGrid v3 ``/v3/mail/send`` (for the production email provider's tests).

Point a client at it by endpoint alone (``client_options={"api_endpoint": url}``), with
anonymous credentials. A control API under ``/_emulator/`` seeds state and injects faults;
the same is available in-process through :class:`Emulator`.

Privacy: the emulator never logs request bodies or addresses (``log_message`` is silent).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

__all__ = ["Emulator", "Fault", "GoogleError"]

# --------------------------------------------------------------------------- documented limits
# https://developers.google.com/admin-sdk/directory/reference/rest/v1/members/list
#   "maxResults: Maximum number of results to return. Max allowed value is 200."
MEMBERS_MAX_RESULTS = 200
# https://developers.google.com/admin-sdk/directory/v1/guides/batch
#   "You're limited to 1000 calls in a single batch request."
BATCH_MAX_CALLS = 1000
# https://cloud.google.com/resource-manager/reference/rest/Shared.Types/Policy (field bindings):
#   "The bindings in a Policy can refer to up to 1,500 principals; up to 250 of these principals
#    can be Google groups. Each occurrence of a principal counts towards these limits." Domains
#   (domain:example.org) are principals too and count per occurrence.
# https://cloud.google.com/iam/docs/allow-policies ("Limits on groups and domains") is more
#   precise about the 250: they may be Google groups, Cloud Identity domains or Workspace
#   accounts; "each unique group is counted only once" there (unlike the 1,500 limit, where
#   every occurrence counts), while IAM "counts all occurrences of each domain or account".
POLICY_MAX_PRINCIPALS = 1500
POLICY_MAX_GROUPS = 250

# BigQuery reports the basic dataset roles by their legacy names:
# https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets#Dataset.FIELDS.access
#   "role: ... The following legacy mappings will be applied: OWNER <=> roles/bigquery.dataOwner,
#    WRITER <=> roles/bigquery.dataEditor, READER <=> roles/bigquery.dataViewer"
BQ_LEGACY_ROLES = {
    "roles/bigquery.dataOwner": "OWNER",
    "roles/bigquery.dataEditor": "WRITER",
    "roles/bigquery.dataViewer": "READER",
}


# Dataset permissions of the predefined roles (https://cloud.google.com/bigquery/docs/access-control),
# the part this emulator checks. Reading a dataset's access list needs
# bigquery.datasets.getIamPolicy and changing it bigquery.datasets.setIamPolicy since Mar 17 2026
# (https://cloud.google.com/bigquery/docs/dataset-access-control); patch needs bigquery.datasets.update.
_DATASET_READ = frozenset({"bigquery.datasets.get", "bigquery.datasets.getIamPolicy"})
BQ_ROLE_PERMISSIONS = {
    "roles/bigquery.admin": _DATASET_READ | {"bigquery.datasets.update", "bigquery.datasets.setIamPolicy"},
    "roles/bigquery.dataOwner": _DATASET_READ | {"bigquery.datasets.update", "bigquery.datasets.setIamPolicy"},
    "roles/bigquery.dataEditor": _DATASET_READ | {"bigquery.datasets.create", "bigquery.datasets.updateTag"},
    "roles/bigquery.dataViewer": _DATASET_READ,
    "roles/bigquery.metadataViewer": frozenset({"bigquery.datasets.get"}),
}


class GoogleError(Exception):
    """An error answered in Google's JSON error format.

    https://cloud.google.com/apis/design/errors#http_mapping and, for the ``errors[]``
    array with ``domain``/``reason`` that the Directory and BigQuery APIs still send,
    https://developers.google.com/admin-sdk/directory/v1/limits and
    https://cloud.google.com/bigquery/docs/error-messages
    """

    _STATUS: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ABORTED",
        412: "FAILED_PRECONDITION",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }

    def __init__(self, code: int, message: str, reason: str, domain: str = "global", status: str | None = None):
        super().__init__(message)
        self.code, self.message, self.reason, self.domain = code, message, reason, domain
        self.status = status or self._STATUS.get(code, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
                "status": self.status,
            }
        }


# Concurrent group-member writes: real Directory API answers 403 quotaExceeded ("Request rate
# higher than configured.") when many member inserts/deletes run at once, batched or in
# parallel. This is observed, not documented with a number: GAM-team/GAM#597 ("Add Failed: 403:
# quotaExceeded - Request rate higher than configured." after GAM started batching member adds)
# and hashicorp/terraform-provider-googleworkspace#159 ("Error 403: Request rate higher than
# configured., quotaExceeded" with concurrent member writes). The budget of 50 writes per
# batch is a model, not a measured Google figure (GAM's default batch size); the emulator
# refuses the writes of one batch beyond ``member_write_budget`` with that answer.
MEMBER_WRITE_BUDGET = 50
QUOTA_EXCEEDED_CONCURRENT = (403, "Request rate higher than configured.", "quotaExceeded", "usageLimits")


# Faults as Google sends them.
# https://developers.google.com/admin-sdk/directory/v1/limits (error table):
#   403 userRateLimitExceeded - over 2,400 queries per minute per user per project: back off;
#   403 quotaExceeded - "Indicates that the limit of concurrent requests for a certain operation
#       has been reached." Recommended action: "Retry using exponential back-off." (its message
#       text, "Request rate higher than configured.", is observed: see QUOTA_EXCEEDED_CONCURRENT);
#   429 rateLimitExceeded - retry with exponential backoff.
# dailyLimitExceeded is not on that page: it is the generic Google API daily-quota reason
# (observed, e.g. GAM-team/GAM#729 "daily limits ... wait 24hours"); cdsops does not retry it.
# https://cloud.google.com/apis/design/errors (500 INTERNAL, 503 UNAVAILABLE "backendError").
_FAULT_ERRORS = {
    "500": (500, "Internal error encountered.", "backendError", "global"),
    "503": (503, "The service is currently unavailable.", "backendError", "global"),
    "429": (429, "Rate Limit Exceeded", "rateLimitExceeded", "usageLimits"),
    "rateLimitExceeded": (403, "Rate Limit Exceeded", "rateLimitExceeded", "usageLimits"),
    "userRateLimitExceeded": (403, "User Rate Limit Exceeded", "userRateLimitExceeded", "usageLimits"),
    "quotaExceeded": QUOTA_EXCEEDED_CONCURRENT,
    "dailyLimitExceeded": (403, "Daily Limit Exceeded", "dailyLimitExceeded", "usageLimits"),
}


@dataclass
class Fault:
    """One injected fault.

    ``kind``: ``500``, ``503``, ``429``, ``rateLimitExceeded``, ``userRateLimitExceeded``,
    ``quotaExceeded``, ``latency`` (sleep ``seconds`` then answer normally) or
    ``concurrent_writer`` (right after the next read of ``target`` - ``projects/P`` or
    ``datasets/P/D`` - another writer adds ``member`` to ``role``, so our write carries a
    stale etag).
    ``match``: an operation name (``directory.members.insert``, ``crm.setIamPolicy``,
    ``bigquery.datasets.patch``, ``batch``, ``sendgrid.send``...) or a prefix of one, ``*``
    for all. ``skip`` matching calls pass first, then ``times`` calls fail (``-1`` = forever).
    """

    kind: str
    match: str = "*"
    times: int = 1
    skip: int = 0
    seconds: float = 0.0
    target: str = ""
    role: str = ""
    member: str = ""
    fired: int = 0

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in _FAULT_ERRORS and self.kind not in ("latency", "concurrent_writer"):
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join([*_FAULT_ERRORS, 'latency', 'concurrent_writer'])}")
        if self.kind == "concurrent_writer" and not (self.target and self.role and self.member):
            raise ValueError("a concurrent_writer fault needs target, role and member")

    def matches(self, op: str) -> bool:
        return self.match == "*" or op == self.match or op.startswith(self.match + ".")

    @property
    def exhausted(self) -> bool:
        return self.times >= 0 and self.fired >= self.times


def _member_key(email: str) -> str:
    """Directory member keys are case-insensitive. There is no Gmail dot or +tag rule: Google
    keeps ``first.last@gmail.com`` and ``firstlast@gmail.com`` as the address given
    (https://developers.google.com/admin-sdk/directory/reference/rest/v1/members: ``memberKey``
    "can be the member's (group or user) primary email address, alias, or unique ID")."""
    return email.strip().lower()


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.groups: dict[str, dict[str, dict[str, Any]]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.datasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.mail: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.calls: dict[str, int] = {}
        self.http_requests = 0
        self._etag = itertools.count(1)
        self._id = itertools.count(100000000000000000000)

    def etag(self) -> str:
        # IAM etags are base64 of an opaque version ("BwX..." in real answers).
        return base64.b64encode(b"cdsops-" + str(next(self._etag)).encode()).decode()

    def new_id(self) -> str:
        return str(next(self._id))


# --------------------------------------------------------------------------- the emulator


class Emulator:
    """The emulator server. ``with Emulator() as emu: emu.url`` or ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, faults: list[Fault | dict] | None = None, quiet: bool = True,
                 rate_limits: dict[str, tuple[int, float]] | None = None, member_write_budget: int | None = MEMBER_WRITE_BUDGET,
                 bigquery_roles: tuple[str, ...] | list[str] = ("roles/bigquery.dataOwner",), stale_reads: int = 0):
        """``rate_limits``: operation prefix -> (calls, window seconds), e.g.
        ``{"directory": (2400, 60.0)}`` answers 403 ``userRateLimitExceeded`` to calls beyond
        2,400 in any 60 s (sliding window), as the Directory API does by default.
        ``member_write_budget``: member inserts/deletes one batch may carry before the rest
        get 403 ``quotaExceeded`` (``None``: no budget).
        ``bigquery_roles``: the caller's roles on every dataset (permissions checked on
        datasets.get/patch/update); ``stale_reads``: reads of a resource after a write that
        still answer the state before it."""
        self.state = _State()
        self.member_write_budget = member_write_budget
        self.bigquery_roles: tuple[str, ...] = tuple(bigquery_roles)
        self.stale_reads = stale_reads
        self._stale: dict[str, list[Any]] = {}
        self.host, self.port, self.quiet = host, port, quiet
        self.rate_limits = dict(rate_limits or {})
        self._rate_log: dict[str, Any] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for f in faults or []:
            self.add_fault(f)

    # -- lifecycle
    def start(self) -> Emulator:
        handler = type("Handler", (_Handler,), {"emu": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="cdsops-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- control (in-process)
    def add_fault(self, fault: Fault | dict) -> Fault:
        f = fault if isinstance(fault, Fault) else Fault(**fault)
        with self.state.lock:
            self.state.faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def reset(self) -> None:
        with self.state.lock:
            s = self.state
            s.groups.clear(), s.policies.clear(), s.datasets.clear(), s.mail.clear(), s.faults.clear(), s.calls.clear()
            s.http_requests = 0
            self._stale.clear()

    def reset_counters(self) -> None:
        with self.state.lock:
            self.state.calls.clear()
            self.state.http_requests = 0

    def create_group(self, group: str, members: list[str] | tuple[str, ...] = ()) -> None:
        with self.state.lock:
            g = self.state.groups.setdefault(group.lower(), {})
            for m in members:
                self._insert_member(g, {"email": m, "role": "MEMBER"})

    def members(self, group: str) -> list[str]:
        with self.state.lock:
            return sorted(m["email"] for m in self.state.groups[group.lower()].values())

    def create_project(self, project: str, bindings: list[dict[str, Any]] | None = None) -> None:
        with self.state.lock:
            self.state.policies[project] = {"version": 1, "etag": self.state.etag(), "bindings": copy.deepcopy(bindings or [])}

    def policy(self, project: str) -> dict[str, Any]:
        with self.state.lock:
            return copy.deepcopy(self.state.policies[project])

    def create_dataset(self, project: str, dataset: str, access: list[dict[str, Any]] | None = None) -> None:
        with self.state.lock:
            self.state.datasets[(project, dataset)] = {
                "kind": "bigquery#dataset",
                "id": f"{project}:{dataset}",
                "datasetReference": {"projectId": project, "datasetId": dataset},
                "location": "US",
                "etag": self.state.etag(),
                "access": [_bq_normalize(a) for a in (access or [])],
            }

    def dataset(self, project: str, dataset: str) -> dict[str, Any]:
        with self.state.lock:
            return copy.deepcopy(self.state.datasets[(project, dataset)])

    def calls(self, op: str | None = None) -> int:
        """API calls served (each call inside a batch counts, as Google counts it)."""
        with self.state.lock:
            if op is None:
                return sum(v for k, v in self.state.calls.items() if k != "batch")
            return sum(v for k, v in self.state.calls.items() if k == op or k.startswith(op + "."))

    @property
    def http_requests(self) -> int:
        with self.state.lock:
            return self.state.http_requests

    @property
    def mail(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return copy.deepcopy(self.state.mail)

    # -- fault machinery
    def _rate_limited(self, op: str) -> GoogleError | None:
        import collections

        for prefix, (calls, window) in self.rate_limits.items():
            if not (op == prefix or op.startswith(prefix + ".")):
                continue
            now = time.monotonic()
            with self.state.lock:
                log = self._rate_log.setdefault(prefix, collections.deque())
                while log and log[0] <= now - window:
                    log.popleft()
                if len(log) >= calls:
                    return GoogleError(403, "Queries per minute per user exceeded.", "userRateLimitExceeded", "usageLimits")
                log.append(now)
        return None

    def _maybe_fault(self, op: str) -> None:
        limited = self._rate_limited(op)
        if limited is not None:
            raise limited
        delay = 0.0
        error: GoogleError | None = None
        with self.state.lock:
            for f in self.state.faults:
                if f.kind == "concurrent_writer" or f.exhausted or not f.matches(op):
                    continue
                if f.skip > 0:
                    f.skip -= 1
                    continue
                f.fired += 1
                if f.kind == "latency":
                    delay += f.seconds
                    continue
                code, msg, reason, domain = _FAULT_ERRORS[f.kind]
                error = GoogleError(code, msg, reason, domain)
                break
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error

    def _after_read(self, target: str) -> None:
        """Run a pending concurrent writer for ``target`` (between our read and our write)."""
        with self.state.lock:
            for f in self.state.faults:
                if f.kind != "concurrent_writer" or f.exhausted or f.target != target:
                    continue
                if f.skip > 0:
                    f.skip -= 1
                    continue
                f.fired += 1
                if target.startswith("projects/"):
                    pol = self.state.policies[target.split("/", 1)[1]]
                    _add_binding(pol["bindings"], f.role, f.member)
                    pol["etag"] = self.state.etag()
                else:
                    _, p, d = target.split("/", 2)
                    ds = self.state.datasets[(p, d)]
                    kind, _, who = f.member.partition(":")
                    key = {"group": "groupByEmail", "user": "userByEmail"}.get(kind, "groupByEmail")
                    ds["access"].append(_bq_normalize({"role": f.role, key: who}))
                    ds["etag"] = self.state.etag()

    # -- Directory API members
    # https://developers.google.com/admin-sdk/directory/reference/rest/v1/members
    def _group(self, group_key: str) -> dict[str, dict[str, Any]]:
        g = self.state.groups.get(urllib.parse.unquote(group_key).lower())
        if g is None:
            # Observed, not documented: an unknown groupKey answers 404 notFound "Resource Not
            # Found: groupKey" (googleapis/google-api-nodejs-client#166 shows the full answer).
            raise GoogleError(404, "Resource Not Found: groupKey", "notFound")
        return g

    def _insert_member(self, g: dict[str, dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            # https://developers.google.com/admin-sdk/directory/reference/rest/v1/members/insert
            raise GoogleError(400, "Missing required field: memberKey", "required")
        key = _member_key(email)
        if key in g:
            # Observed, not documented: members.insert of an existing member answers 409 "Member
            # already exists." (reason duplicate), e.g. GAM-team/GAM#597 ("Error: 409: Member already exists").
            raise GoogleError(409, "Member already exists.", "duplicate")
        member = {
            "kind": "admin#directory#member",
            "etag": f'"{uuid.uuid4().hex}"',
            "id": self.state.new_id(),
            "email": email.strip().lower(),
            "role": body.get("role", "MEMBER"),
            "type": body.get("type", "USER"),
            "status": "ACTIVE",
        }
        g[key] = member
        return member

    def members_list(self, group_key: str, query: dict[str, list[str]]) -> dict[str, Any]:
        # https://developers.google.com/admin-sdk/directory/reference/rest/v1/members/list
        raw = (query.get("maxResults") or ["200"])[0]
        try:
            max_results = int(raw)
        except ValueError:
            raise GoogleError(400, f"Invalid value '{raw}'. Values must be within the range: [1, 200]", "invalid") from None
        if not 1 <= max_results <= MEMBERS_MAX_RESULTS:
            raise GoogleError(400, f"Invalid value '{raw}'. Values must be within the range: [1, 200]", "invalid")
        token = (query.get("pageToken") or [""])[0]
        with self.state.lock:
            g = self._group(group_key)
            keys = sorted(g)
            start = 0
            if token:
                try:
                    last = base64.urlsafe_b64decode(token.encode()).decode()
                except (ValueError, UnicodeDecodeError):
                    raise GoogleError(400, "Invalid pageToken", "invalid") from None
                import bisect

                start = bisect.bisect_right(keys, last)
            page = keys[start : start + max_results]
            out: dict[str, Any] = {"kind": "admin#directory#members", "etag": f'"{uuid.uuid4().hex}"'}
            if page:
                out["members"] = [copy.copy(g[k]) for k in page]
            if start + max_results < len(keys):
                out["nextPageToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
            return out

    def members_insert(self, group_key: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            return copy.copy(self._insert_member(self._group(group_key), body))

    def members_delete(self, group_key: str, member_key: str) -> None:
        with self.state.lock:
            g = self._group(group_key)
            key = _member_key(urllib.parse.unquote(member_key))
            if key not in g:
                # Observed, not documented: deleting a non-member answers 404 notFound "Resource Not
                # Found: memberKey" (googleapis/google-api-nodejs-client#166, lithnet/googleapps-managementagent#13).
                raise GoogleError(404, "Resource Not Found: memberKey", "notFound")
            del g[key]

    # -- Resource Manager IAM
    # https://cloud.google.com/resource-manager/reference/rest/v3/projects/getIamPolicy
    # https://cloud.google.com/resource-manager/reference/rest/v3/projects/setIamPolicy
    def get_iam_policy(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        requested = ((body or {}).get("options") or {}).get("requestedPolicyVersion", 1)
        if requested not in (0, 1, 3):
            # GetPolicyOptions.requestedPolicyVersion: "Valid values are 0, 1, and 3. Requests
            # specifying an invalid value will be rejected."
            # https://cloud.google.com/resource-manager/reference/rest/v3/GetPolicyOptions
            raise GoogleError(400, "Invalid requested policy version.", "badRequest")
        with self.state.lock:
            pol = self.state.policies.get(project)
            if pol is None:
                # Observed: a project the caller cannot see (or that does not exist) answers 403
                # "The caller does not have permission" (kubeflow/kubeflow#7140), not 404.
                raise GoogleError(403, "The caller does not have permission", "forbidden")
            out = copy.deepcopy(self._stale_or(f"projects/{project}", pol))
        self._after_read(f"projects/{project}")
        return out

    def set_iam_policy(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        policy = (body or {}).get("policy")
        if not isinstance(policy, dict):
            raise GoogleError(400, "Request contains an invalid argument.", "badRequest")
        bindings = policy.get("bindings") or []
        with self.state.lock:
            cur = self.state.policies.get(project)
            if cur is None:
                raise GoogleError(403, "The caller does not have permission", "forbidden")
            etag = policy.get("etag")
            if etag is not None and etag != cur["etag"]:
                # Policy.etag (https://cloud.google.com/resource-manager/reference/rest/Shared.Types/Policy):
                # "systems are expected to put that etag in the request to setIamPolicy to ensure that
                # their change will be applied to the same version of the policy". The answer to a
                # stale etag, 409 ABORTED, is what https://cloud.google.com/iam/docs/retry-strategy
                # tells clients to retry by repeating the whole read-modify-write.
                raise GoogleError(409, "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.", "aborted")
            _check_policy(policy, bindings)
            new = _apply_update_mask(cur, policy, (body or {}).get("updateMask"))
            new["etag"] = self.state.etag()
            self._remember_stale(f"projects/{project}", cur)
            self.state.policies[project] = new
            return copy.deepcopy(new)

    # -- stale reads after a write (eventual consistency)
    # "Changes to a principal's access are eventually consistent" and a read right after a write
    # may not show it (https://cloud.google.com/iam/docs/allow-policies,
    # https://cloud.google.com/iam/docs/retry-strategy): the next ``stale_reads`` reads of a
    # resource after a write answer the state before that write.
    def _remember_stale(self, target: str, before: dict[str, Any]) -> None:
        if self.stale_reads > 0:
            self._stale[target] = [copy.deepcopy(before), self.stale_reads]

    def _stale_or(self, target: str, current: dict[str, Any]) -> dict[str, Any]:
        stale = self._stale.get(target)
        if not stale or stale[1] <= 0:
            return current
        stale[1] -= 1
        return stale[0]

    # -- BigQuery datasets
    # https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/get
    # https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/patch
    def _ds(self, project: str, dataset: str) -> dict[str, Any]:
        ds = self.state.datasets.get((project, dataset))
        if ds is None:
            # https://cloud.google.com/bigquery/docs/error-messages : notFound, 404, "This error
            # returns when you refer to a resource (a dataset, a table, or a job) that doesn't exist"
            raise GoogleError(404, f"Not found: Dataset {project}:{dataset}", "notFound")
        return ds

    def _require(self, project: str, dataset: str, *permissions: str) -> None:
        """403 unless the caller's dataset roles (``bigquery_roles``) hold ``permissions``."""
        held = set().union(*(BQ_ROLE_PERMISSIONS.get(r, frozenset()) for r in self.bigquery_roles))
        for perm in permissions:
            if perm not in held:
                # https://cloud.google.com/bigquery/docs/error-messages : accessDenied, 403
                raise GoogleError(403, f"Access Denied: Dataset {project}:{dataset}: Permission {perm} denied on dataset "
                                       f"{project}:{dataset} (or it may not exist).", "accessDenied")

    def dataset_get(self, project: str, dataset: str, query: dict[str, list[str]] | None = None) -> dict[str, Any]:
        version = _access_policy_version(query)
        self._require(project, dataset, "bigquery.datasets.get", "bigquery.datasets.getIamPolicy")
        with self.state.lock:
            out = copy.deepcopy(self._stale_or(f"datasets/{project}/{dataset}", self._ds(project, dataset)))
        if version != 3:
            out["access"] = [_withcond(a) for a in out.get("access", [])]
        self._after_read(f"datasets/{project}/{dataset}")
        return out

    def dataset_write(self, project: str, dataset: str, body: dict[str, Any], if_match: str | None, replace: bool,
                      query: dict[str, list[str]] | None = None) -> dict[str, Any]:
        version = _access_policy_version(query)
        needs = ["bigquery.datasets.update"] + (["bigquery.datasets.setIamPolicy"] if "access" in (body or {}) or replace else [])
        self._require(project, dataset, *needs)
        with self.state.lock:
            ds = self._ds(project, dataset)
            # The etag guards read-modify-write ("Using patch in a read-modify-write cycle",
            # https://cloud.google.com/bigquery/docs/api-performance#read-patch-write);
            # google-cloud-bigquery sends it as If-Match. The answer to a stale one, 412
            # "Precondition check failed.", is observed: googleapis/python-bigquery#772,
            # googleapis/google-cloud-python#5588.
            if if_match and if_match != ds["etag"]:
                raise GoogleError(412, "Precondition check failed.", "conditionNotMet")
            conditional = any(a.get("condition") for a in ds.get("access", []) + list((body or {}).get("access") or []))
            if conditional and version != 3:
                # datasets.patch accessPolicyVersion: "If unset or if 0 or 1 value is used for dataset
                # with conditional bindings, request will be rejected."
                raise GoogleError(400, "Access policy version 3 is required for datasets with conditional access entries.", "invalid")
            self._remember_stale(f"datasets/{project}/{dataset}", ds)
            _write_dataset(ds, body, replace)
            ds["etag"] = self.state.etag()
            return copy.deepcopy(ds)

    # -- SendGrid v3 mail send
    # https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send : 202 Accepted, empty body
    def mail_send(self, body: dict[str, Any], auth: str | None) -> None:
        if not auth or not auth.startswith("Bearer "):
            raise GoogleError(401, "The provided authorization grant is invalid, expired, or revoked", "unauthorized")
        if not body.get("personalizations") or not body.get("from") or not (body.get("content") or body.get("template_id")):
            raise GoogleError(400, "The personalizations field is required and must have at least one personalization.", "badRequest")
        with self.state.lock:
            self.state.mail.append(copy.deepcopy(body))

    # -- dispatch (shared by plain requests and batch parts)
    _ROUTES: ClassVar[list[tuple[str, re.Pattern[str], str]]] = [
        ("GET", re.compile(r"/admin/directory/v1/groups/([^/]+)/members\Z"), "directory.members.list"),
        ("POST", re.compile(r"/admin/directory/v1/groups/([^/]+)/members\Z"), "directory.members.insert"),
        ("DELETE", re.compile(r"/admin/directory/v1/groups/([^/]+)/members/([^/]+)\Z"), "directory.members.delete"),
        ("POST", re.compile(r"/v[13]/projects/([^/:]+):getIamPolicy\Z"), "crm.getIamPolicy"),
        ("POST", re.compile(r"/v[13]/projects/([^/:]+):setIamPolicy\Z"), "crm.setIamPolicy"),
        ("GET", re.compile(r"/bigquery/v2/projects/([^/]+)/datasets/([^/]+)\Z"), "bigquery.datasets.get"),
        ("PATCH", re.compile(r"/bigquery/v2/projects/([^/]+)/datasets/([^/]+)\Z"), "bigquery.datasets.patch"),
        ("PUT", re.compile(r"/bigquery/v2/projects/([^/]+)/datasets/([^/]+)\Z"), "bigquery.datasets.update"),
        ("POST", re.compile(r"/v3/mail/send\Z"), "sendgrid.send"),
    ]

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Serve one API call; returns (status, json-able body or None)."""
        parsed = urllib.parse.urlsplit(target)
        path = parsed.path
        query = urllib.parse.parse_qs(parsed.query)
        for m, rx, op in self._ROUTES:
            if m != method:
                continue
            mt = rx.match(path)
            if not mt:
                continue
            with self.state.lock:
                self.state.calls[op] = self.state.calls.get(op, 0) + 1
            try:
                self._maybe_fault(op)
                data: dict[str, Any] = {}
                if body:
                    try:
                        data = json.loads(body)
                    except ValueError:
                        raise GoogleError(400, "Invalid JSON payload received.", "parseError") from None
                args = [urllib.parse.unquote(a) for a in mt.groups()]
                if op == "directory.members.list":
                    return 200, self.members_list(args[0], query)
                if op == "directory.members.insert":
                    return 200, self.members_insert(args[0], data)
                if op == "directory.members.delete":
                    self.members_delete(args[0], args[1])
                    return 204, None
                if op == "crm.getIamPolicy":
                    return 200, self.get_iam_policy(args[0], data)
                if op == "crm.setIamPolicy":
                    return 200, self.set_iam_policy(args[0], data)
                if op == "bigquery.datasets.get":
                    return 200, self.dataset_get(args[0], args[1], query)
                if op in ("bigquery.datasets.patch", "bigquery.datasets.update"):
                    return 200, self.dataset_write(args[0], args[1], data, _header(headers, "if-match"), op.endswith("update"), query)
                if op == "sendgrid.send":
                    self.mail_send(data, _header(headers, "authorization"))
                    return 202, None
            except GoogleError as e:
                return e.code, e.body()
        return 404, GoogleError(404, f"Method not found: {method} {path}", "notFound").body()

    # -- batch: https://developers.google.com/admin-sdk/directory/v1/guides/batch
    def batch(self, content_type: str, body: bytes) -> tuple[int, str, bytes]:
        mt = re.search(r'boundary="?([^";]+)"?', content_type or "")
        if not content_type.startswith("multipart/mixed") or not mt:
            err = GoogleError(400, "Batch request must be multipart/mixed with a boundary.", "badRequest")
            return 400, "application/json", json.dumps(err.body()).encode()
        with self.state.lock:
            self.state.calls["batch"] = self.state.calls.get("batch", 0) + 1
        try:
            self._maybe_fault("batch")
        except GoogleError as e:
            return e.code, "application/json", json.dumps(e.body()).encode()
        boundary = mt.group(1)
        text = body.decode("utf-8")
        parts = []
        for chunk in text.split("--" + boundary):
            chunk = chunk.strip("\r\n")
            if not chunk or chunk == "--" or chunk.startswith("--"):
                continue
            parts.append(chunk)
        if len(parts) > BATCH_MAX_CALLS:
            err = GoogleError(400, f"A batch request cannot contain more than {BATCH_MAX_CALLS} calls.", "badRequest")
            return 400, "application/json", json.dumps(err.body()).encode()
        out_boundary = "batch_" + uuid.uuid4().hex
        out = []
        writes = 0
        for part in parts:
            outer_head, _, inner = _split_head(part)
            outer = _parse_headers(outer_head)
            inner_head, _, inner_body = _split_head(inner)
            lines = inner_head.splitlines()
            method, target, _proto = lines[0].split(" ", 2)
            hdrs = _parse_headers("\n".join(lines[1:]))
            if method in ("POST", "DELETE") and "/members" in target:
                writes += 1
            if self.member_write_budget is not None and writes > self.member_write_budget and "/members" in target and method != "GET":
                status, payload = self._over_budget(method, target)
            else:
                status, payload = self.dispatch(method, target, hdrs, inner_body.encode("utf-8"))
            cid = outer.get("content-id", "<x+0>")
            resp_body = "" if payload is None else json.dumps(payload)
            out.append(
                f"--{out_boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{cid.strip()[1:-1]}>\r\n\r\n"
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json; charset=UTF-8\r\n"
                f"Content-Length: {len(resp_body.encode())}\r\n\r\n{resp_body}\r\n"
            )
        out.append(f"--{out_boundary}--\r\n")
        return 200, f"multipart/mixed; boundary={out_boundary}", "".join(out).encode("utf-8")

    def _over_budget(self, method: str, target: str) -> tuple[int, Any]:
        """A member write beyond the batch's concurrent-write budget: counted, refused."""
        op = "directory.members.insert" if method == "POST" else "directory.members.delete"
        with self.state.lock:
            self.state.calls[op] = self.state.calls.get(op, 0) + 1
        code, msg, reason, domain = QUOTA_EXCEEDED_CONCURRENT
        return code, GoogleError(code, msg, reason, domain).body()

    # -- OAuth 2.0 token endpoint for service-account keys whose token_uri points here
    # https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests :
    # POST grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT; the JWT claim set
    # holds iss (the service account), scope (space-delimited), aud, exp, iat and, with domain-wide
    # delegation, sub (the user impersonated). The answer: access_token, expires_in, token_type.
    def token(self, body: bytes) -> tuple[int, Any]:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        assertion = (form.get("assertion") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
            return 400, {"error": "invalid_grant", "error_description": "Invalid grant: not a JWT bearer assertion."}
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        with self.state.lock:
            self.state.token_requests.append({k: claims.get(k) for k in ("iss", "sub", "scope", "aud")})
        return 200, {"access_token": "emulator-" + uuid.uuid4().hex, "expires_in": 3600, "token_type": "Bearer"}

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        """Claims (iss, sub, scope, aud) of every token request, in order (no key material)."""
        with self.state.lock:
            return copy.deepcopy(self.state.token_requests)

    # -- control API
    def control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        data = json.loads(body) if body else {}
        try:
            if method == "POST" and path == "/_emulator/faults":
                items = data if isinstance(data, list) else [data]
                for item in items:
                    self.add_fault(item)
                return 200, {"faults": len(self.state.faults)}
            if method == "DELETE" and path == "/_emulator/faults":
                self.clear_faults()
                return 200, {"faults": 0}
            if method == "POST" and path == "/_emulator/reset":
                self.reset()
                return 200, {}
            if method == "POST" and path == "/_emulator/groups":
                self.create_group(data["group"], data.get("members", []))
                return 200, {}
            if method == "POST" and path == "/_emulator/projects":
                self.create_project(data["project"], data.get("bindings"))
                return 200, {}
            if method == "POST" and path == "/_emulator/datasets":
                self.create_dataset(data["project"], data["dataset"], data.get("access"))
                return 200, {}
            if method == "GET" and path == "/_emulator/state":
                with self.state.lock:
                    return 200, {
                        "groups": {k: len(v) for k, v in self.state.groups.items()},
                        "projects": sorted(self.state.policies),
                        "datasets": [f"{p}:{d}" for p, d in sorted(self.state.datasets)],
                        "mail_sent": len(self.state.mail),
                        "calls": dict(self.state.calls),
                        "faults": [f.__dict__ for f in self.state.faults],
                    }
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"bad control request: {exc}"}
        return 404, {"error": f"unknown control endpoint {method} {path}"}


_REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 412: "Precondition Failed", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _header(headers: dict[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _split_head(text: str) -> tuple[str, str, str]:
    m = re.search(r"\r?\n\r?\n", text)
    if not m:
        return text, "", ""
    return text[: m.start()], "", text[m.end() :]


def _parse_headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out


def _add_binding(bindings: list[dict[str, Any]], role: str, member: str) -> None:
    for b in bindings:
        if b.get("role") == role and not b.get("condition"):
            if member not in b.setdefault("members", []):
                b["members"].append(member)
            return
    bindings.append({"role": role, "members": [member]})


def _check_policy(policy: dict[str, Any], bindings: list[dict[str, Any]]) -> None:
    """400 for a policy Google refuses: conditions without version 3, too many principals."""
    if any(b.get("condition") for b in bindings) and policy.get("version", 1) != 3:
        # Policy.version: "Any operation that affects conditional role bindings must specify
        # version 3" (https://cloud.google.com/resource-manager/reference/rest/Shared.Types/Policy)
        raise GoogleError(400, "Conditional bindings require policy version 3.", "badRequest")
    # every occurrence counts (POLICY_MAX_PRINCIPALS): a list, never a set
    principals = [m for b in bindings for m in b.get("members", [])]
    # the 250: each distinct group once, each domain at every occurrence (POLICY_MAX_GROUPS)
    groups = len({m for m in principals if m.startswith("group:")}) + sum(1 for m in principals if m.startswith("domain:"))
    if len(principals) > POLICY_MAX_PRINCIPALS:
        raise GoogleError(400, f"The number of members in the policy ({len(principals)}) is larger than the maximum allowed size "
                               f"{POLICY_MAX_PRINCIPALS}.", "badRequest")
    if groups > POLICY_MAX_GROUPS:
        raise GoogleError(400, f"The number of groups and domains in the policy ({groups}) is larger than the maximum allowed size "
                               f"{POLICY_MAX_GROUPS}.", "badRequest")


def _apply_update_mask(cur: dict[str, Any], policy: dict[str, Any], mask: Any) -> dict[str, Any]:
    """setIamPolicy's ``updateMask``: "Only the fields in the mask will be modified. If no mask is
    provided, the following default mask is used: paths: "bindings, etag""
    (https://cloud.google.com/resource-manager/reference/rest/v3/projects/setIamPolicy), so
    ``auditConfigs`` the caller did not name survive."""
    paths = {p.strip() for p in str(mask or "bindings,etag").split(",") if p.strip()}
    new = copy.deepcopy(cur)
    new["version"] = policy.get("version", 1)
    new["bindings"] = copy.deepcopy(policy.get("bindings") or [])
    if "auditConfigs" in paths or "audit_configs" in paths:
        if policy.get("auditConfigs"):
            new["auditConfigs"] = copy.deepcopy(policy["auditConfigs"])
        else:
            new.pop("auditConfigs", None)
    return new


def _access_policy_version(query: dict[str, list[str]] | None) -> int:
    raw = ((query or {}).get("accessPolicyVersion") or ["0"])[0]
    if raw not in ("0", "1", "3"):
        # datasets.get/patch accessPolicyVersion: "Valid values are 0, 1, and 3. Requests
        # specifying an invalid value will be rejected."
        raise GoogleError(400, f"Invalid access policy version {raw}.", "invalid")
    return int(raw)


def _withcond(entry: dict[str, Any]) -> dict[str, Any]:
    """A conditional entry as a read below version 3 shows it: datasets.get accessPolicyVersion,
    "access entry with condition will have role string appended by 'withcond' string followed by a
    hash value", e.g. "roles/bigquery.dataViewer_with_conditionalbinding_7a34awqsda"."""
    if not entry.get("condition"):
        return entry
    import hashlib

    digest = hashlib.sha1(json.dumps(entry["condition"], sort_keys=True).encode()).hexdigest()[:10]
    out = {k: v for k, v in entry.items() if k != "condition"}
    out["role"] = f"{entry.get('role', '')}_with_conditionalbinding_{digest}"
    return out


def _write_dataset(ds: dict[str, Any], body: dict[str, Any], replace: bool) -> None:
    if replace:
        keep = {k: ds[k] for k in ("kind", "id", "datasetReference", "location")}
        ds.clear()
        ds.update(keep)
        ds["access"] = []
    for k, v in (body or {}).items():
        if k in ("kind", "id", "datasetReference", "etag"):
            continue
        ds[k] = [_bq_normalize(a) for a in v] if k == "access" else v


def _bq_normalize(entry: dict[str, Any]) -> dict[str, Any]:
    e = dict(entry)
    # conditional entries keep the IAM role name (the datasets.get accessPolicyVersion example)
    if e.get("role") in BQ_LEGACY_ROLES and not e.get("condition"):
        e["role"] = BQ_LEGACY_ROLES[e["role"]]
    return e


class _Handler(BaseHTTPRequestHandler):
    emu: Emulator
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.emu.quiet:
            super().log_message("%s %s", self.command, urllib.parse.urlsplit(self.path).path.split("/members/")[0])

    def _read(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, ctype: str, payload: bytes) -> None:
        self.send_response(status)
        if payload or status not in (204,):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _handle(self) -> None:
        body = self._read()
        with self.emu.state.lock:
            self.emu.state.http_requests += 1
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_emulator/"):
            status, data = self.emu.control(self.command, path, body)
            self._send(status, "application/json", json.dumps(data).encode())
            return
        if self.command == "POST" and path == "/token":
            status, data = self.emu.token(body)
            self._send(status, "application/json", json.dumps(data).encode())
            return
        if self.command == "POST" and (path == "/batch" or path.startswith("/batch/")):
            status, ctype, payload = self.emu.batch(self.headers.get("Content-Type", ""), body)
            self._send(status, ctype, payload)
            return
        status, data = self.emu.dispatch(self.command, self.path, dict(self.headers.items()), body)
        payload = b"" if data is None else json.dumps(data).encode()
        self._send(status, "application/json; charset=UTF-8", payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
