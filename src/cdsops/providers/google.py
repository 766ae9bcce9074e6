"""Google providers: the data-access Google Group (Admin SDK Directory API) and the roles the
group holds (Cloud Resource Manager IAM policy, BigQuery dataset access).

Only the official ``google-api-python-client`` is used, with the discovery documents it ships
(``static_discovery=True``). Production credentials come from a service-account key file
(Directory API calls impersonate a Workspace admin through domain-wide delegation, the
``subject``); when an emulator endpoint is configured (``CDSOPS_GOOGLE_EMULATOR`` or
``emulator=``) the clients use anonymous credentials and that endpoint alone.

Batch requests: the client's ``new_batch_http_request()`` always posts to the discovery
document's ``rootUrl`` + ``batchPath`` (``https://admin.googleapis.com/batch``), ignoring
``api_endpoint``; so we build ``BatchHttpRequest`` with an explicit ``batch_uri`` on the
configured endpoint.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdsops.identity import InvalidEmail, canonicalize
from cdsops.providers.base import (
    AccessChange,
    AccessReport,
    LimitExceeded,
    ProviderError,
    QuotaExceeded,
    SyncReport,
    VerificationFailed,
)
from cdsops.providers.retry import (
    FATAL,
    QUOTA,
    RETRIED_QUOTA_REASONS,
    RETRY,
    Backoff,
    RateLimiter,
    classify,
    error_reason,
)

__all__ = [
    "BATCH_MAX_CALLS",
    "EMULATOR_ENV",
    "MEMBER_WRITE_BATCH",
    "POLICY_MAX_GROUPS",
    "POLICY_MAX_PRINCIPALS",
    "SCOPES",
    "GoogleAccessProvider",
    "GoogleGroupProvider",
    "GoogleService",
    "build_service",
]

log = logging.getLogger("cdsops.providers.google")

EMULATOR_ENV = "CDSOPS_GOOGLE_EMULATOR"
# Least-privilege OAuth scopes per API.
SCOPES = {
    # https://developers.google.com/admin-sdk/directory/v1/guides/authorizing
    "directory": ("https://www.googleapis.com/auth/admin.directory.group.member",),
    # https://cloud.google.com/resource-manager/reference/rest/v3/projects/setIamPolicy (Authorization scopes)
    "crm": ("https://www.googleapis.com/auth/cloud-platform",),
    # https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/patch (Authorization scopes)
    "bigquery": ("https://www.googleapis.com/auth/bigquery",),
}
_APIS = {
    "directory": ("admin", "directory_v1", "", "batch"),
    "crm": ("cloudresourcemanager", "v3", "", "batch"),
    "bigquery": ("bigquery", "v2", "bigquery/v2/", "batch/bigquery/v2"),
}
# Policy.bindings: "up to 1,500 principals; up to 250 of these principals can be Google groups"
# https://cloud.google.com/resource-manager/reference/rest/Shared.Types/Policy
POLICY_MAX_PRINCIPALS = 1500
POLICY_MAX_GROUPS = 250
# https://developers.google.com/admin-sdk/directory/v1/guides/batch
BATCH_MAX_CALLS = 1000
# Member writes per batch: many concurrent member writes get 403 quotaExceeded "Request rate
# higher than configured." (GAM-team/GAM#597, hashicorp/terraform-provider-googleworkspace#159);
# GAM's default batch is 50. Measured with benchmarks/bench_groups.py (docs/providers.md).
MEMBER_WRITE_BATCH = 50
# https://developers.google.com/admin-sdk/directory/reference/rest/v1/members/list
MEMBERS_PAGE_MAX = 200
# https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/get (accessPolicyVersion)
ACCESS_POLICY_VERSION = 3
# https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets#Dataset.FIELDS.access
_BQ_LEGACY = {"roles/bigquery.dataOwner": "OWNER", "roles/bigquery.dataEditor": "WRITER", "roles/bigquery.dataViewer": "READER"}


@dataclass
class GoogleService:
    """A discovery client plus where its batch requests go."""

    api: str
    resource: Any
    batch_uri: str

    def new_batch(self, callback: Callable | None = None):
        from googleapiclient.http import BatchHttpRequest

        return BatchHttpRequest(callback=callback, batch_uri=self.batch_uri)


def build_service(
    api: str,
    *,
    emulator: str | None = None,
    credentials_file: str | None = None,
    subject: str | None = None,
    credentials: Any = None,
    timeout: float = 60.0,
) -> GoogleService:
    """Build the client for ``api`` (``directory``, ``crm`` or ``bigquery``).

    With ``emulator`` (or ``$CDSOPS_GOOGLE_EMULATOR``): anonymous credentials, that endpoint.
    Otherwise ``credentials`` or the service-account key ``credentials_file`` (or Application
    Default Credentials), scoped to :data:`SCOPES`; ``subject`` is the Workspace admin the
    service account impersonates (domain-wide delegation, required for ``directory``).
    """
    import google_auth_httplib2
    import httplib2
    from googleapiclient.discovery import build

    if api not in _APIS:
        raise ValueError(f"unknown Google API {api!r}; expected one of {', '.join(_APIS)}")
    name, version, service_path, batch_path = _APIS[api]
    emulator = emulator if emulator is not None else os.environ.get(EMULATOR_ENV) or None
    options: dict[str, Any] = {}
    if emulator:
        if not emulator.startswith(("http://127.", "http://localhost", "http://[::1]", "https://")):
            raise ValueError(f"{EMULATOR_ENV} must be an http://127.x.x.x:PORT (loopback) or https URL, got {emulator!r}")
        import google.auth.credentials

        root = emulator.rstrip("/") + "/"
        creds = google.auth.credentials.AnonymousCredentials()
        options["api_endpoint"] = root + service_path
        batch_uri = root + batch_path
    else:
        creds = _credentials(api, credentials, credentials_file, subject)
        batch_uri = "https://" + {"directory": "admin", "crm": "cloudresourcemanager", "bigquery": "bigquery"}[api] + ".googleapis.com/" + batch_path
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=timeout))
    resource = build(name, version, http=http, static_discovery=True, cache_discovery=False, client_options=options or None)
    return GoogleService(api, resource, batch_uri)


def _credentials(api: str, credentials: Any, credentials_file: str | None, subject: str | None) -> Any:
    """Production credentials for ``api``: given, from the key file, or Application Default
    Credentials (``GOOGLE_APPLICATION_CREDENTIALS``), scoped to :data:`SCOPES`; ``subject`` for
    domain-wide delegation."""
    import google.auth
    import google.auth.exceptions

    if credentials is not None:
        creds = credentials
    elif credentials_file:
        from google.oauth2 import service_account

        try:
            creds = service_account.Credentials.from_service_account_file(credentials_file, scopes=list(SCOPES[api]))
        except (OSError, ValueError) as exc:
            raise ProviderError(f"cannot load the service-account key {credentials_file}: {exc}") from exc
    else:
        try:
            creds, _project = google.auth.default(scopes=list(SCOPES[api]))
        except google.auth.exceptions.DefaultCredentialsError:
            raise ProviderError(
                f"no Google credentials for the {api} API: set GOOGLE_APPLICATION_CREDENTIALS (or "
                f"providers.google.credentials_file) to a service-account key, or {EMULATOR_ENV} to use the emulator"
            ) from None
    if subject:
        if not hasattr(creds, "with_subject"):
            raise ProviderError("domain-wide delegation (subject) needs service-account credentials")
        return creds.with_subject(subject)
    if api == "directory":
        log.warning("directory API without a delegated subject: the service account itself needs the Groups Administrator admin role")
    return creds


def _transport_errors() -> tuple[type[BaseException], ...]:
    import httplib2

    return (ConnectionError, socket.timeout, TimeoutError, httplib2.HttpLib2Error)


class _Caller:
    """Executes single requests with the retry policy and counts API calls."""

    def __init__(self, backoff: Backoff | None, limiter: RateLimiter | None = None):
        self.backoff = backoff or Backoff()
        self.limiter = limiter
        self.api_calls = 0
        self.http_requests = 0

    def execute(self, request: Any, what: str, conflict_ok: Sequence[int] = ()) -> Any:
        from googleapiclient.errors import HttpError

        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire(1)
            self.api_calls += 1
            self.http_requests += 1
            try:
                return request.execute(num_retries=0)
            except HttpError as exc:
                status = exc.resp.status
                if status in conflict_ok:
                    raise
                kind = classify(status, exc.content)
                reason = error_reason(exc.content)
                if kind == QUOTA:
                    raise QuotaExceeded(f"{what}: Google API quota exceeded ({reason}); stopped cleanly, the next run resumes") from None
                if kind != RETRY:
                    raise ProviderError(f"{what} failed: HTTP {status} {reason}".rstrip()) from None
                err = f"HTTP {status} {reason}".rstrip()
            except _transport_errors() as exc:
                err = f"transport error {type(exc).__name__}"
            attempt += 1
            if attempt >= self.backoff.max_attempts:
                error = QuotaExceeded if any(r in err for r in RETRIED_QUOTA_REASONS) else ProviderError
                raise error(f"{what} failed after {attempt} attempts (last: {err}); the next run resumes")
            log.info("retrying %s after %s (attempt %d)", what, err, attempt)
            self.backoff.wait(attempt - 1)


# --------------------------------------------------------------------------- group membership


class GoogleGroupProvider:
    """Members of one Google Group, synced by differences in batches.

    Only plain members (``role == MEMBER``, ``type == USER``) are managed; owners, managers,
    nested groups and customer entries are counted as ``unmanaged`` and never touched.
    """

    def __init__(
        self,
        group: str,
        service: GoogleService,
        *,
        backoff: Backoff | None = None,
        batch_size: int = MEMBER_WRITE_BATCH,
        page_size: int = MEMBERS_PAGE_MAX,
        rate_limiter: RateLimiter | None = None,
    ):
        """``rate_limiter`` paces every call (list pages and each call inside a batch), e.g.
        ``RateLimiter(2400, 60)`` for the Directory API's default per-user quota."""
        try:
            self.group = canonicalize(group)
        except InvalidEmail as exc:
            raise ValueError(f"group address is invalid: {exc}") from None
        if not 1 <= batch_size <= BATCH_MAX_CALLS:
            raise ValueError(f"batch_size must be between 1 and {BATCH_MAX_CALLS} (the documented batch limit)")
        if not 1 <= page_size <= MEMBERS_PAGE_MAX:
            raise ValueError(f"page_size must be between 1 and {MEMBERS_PAGE_MAX} (members.list maxResults)")
        self.service = service
        self.backoff = backoff or Backoff()
        self.batch_size = batch_size
        self.page_size = page_size
        self._members_resource: Any = None
        self.rate_limiter = rate_limiter
        if rate_limiter is not None:
            self.batch_size = min(batch_size, rate_limiter.calls)

    # -- reading
    def _list(self, caller: _Caller) -> tuple[dict[str, str], set[str]]:
        """(managed members: canonical -> address as listed, canonical ids of unmanaged entries)."""
        members = self.service.resource.members()
        managed: dict[str, str] = {}
        unmanaged: set[str] = set()
        token = None
        while True:
            req = members.list(groupKey=self.group, maxResults=self.page_size, pageToken=token)
            page = caller.execute(req, "members.list")
            for m in page.get("members", []):
                email = m.get("email") or m.get("id") or ""
                try:
                    ident = canonicalize(email)
                except InvalidEmail:
                    unmanaged.add(email)
                    continue
                if m.get("role", "MEMBER") != "MEMBER" or m.get("type", "USER") != "USER":
                    unmanaged.add(ident)
                else:
                    managed[ident] = email
            token = page.get("nextPageToken")
            if not token:
                return managed, unmanaged

    def list_members(self) -> list[str]:
        managed, _ = self._list(_Caller(self.backoff, self.rate_limiter))
        return sorted(managed)

    # -- writing
    def sync(self, desired: Iterable[str], dry_run: bool = False) -> SyncReport:
        want = set()
        for d in desired:
            try:
                want.add(canonicalize(d))
            except InvalidEmail as exc:
                raise ProviderError(f"a desired member of {self.group} is not a valid address: {exc}") from None
        caller = _Caller(self.backoff, self.rate_limiter)
        current, unmanaged_ids = self._list(caller)
        unmanaged = len(unmanaged_ids)
        # A wanted person who is already in the group as an owner or manager has access: unchanged.
        to_add = sorted(want - current.keys() - unmanaged_ids)
        to_remove = sorted(current.keys() - want)
        unchanged = len(want & (current.keys() | unmanaged_ids))

        def report(added: Iterable[str], removed: Iterable[str]) -> SyncReport:
            return SyncReport(
                group=self.group, added=tuple(sorted(added)), removed=tuple(sorted(removed)), unchanged=unchanged,
                api_calls=caller.api_calls, http_requests=caller.http_requests, dry_run=dry_run, unmanaged=unmanaged,
            )

        if dry_run or not (to_add or to_remove):
            return report(to_add if dry_run else (), to_remove if dry_run else ())
        ops: list[_Op] = [("insert", ident, None) for ident in to_add] + [("delete", ident, current[ident]) for ident in to_remove]
        progress = _Progress()
        self._run(ops, caller, progress, report)
        return report(progress.added, progress.removed)

    def _request(self, op: _Op) -> Any:
        # Building the resource object costs milliseconds (discovery parsing): build it once.
        members = self._members_resource
        if members is None:
            members = self._members_resource = self.service.resource.members()
        kind, ident, key = op
        if kind == "insert":
            return members.insert(groupKey=self.group, body={"email": ident, "role": "MEMBER"})
        return members.delete(groupKey=self.group, memberKey=key)

    def _run(self, ops: list[_Op], caller: _Caller, progress: _Progress, report: Callable[..., SyncReport]) -> None:
        """Send ``ops`` in batches; retry what failed transiently (429, 5xx, rate limits and
        ``quotaExceeded``) with backoff; stop cleanly on a daily limit; fail on anything else."""
        pending = list(ops)
        attempt = 0
        while pending:
            for start in range(0, len(pending), self.batch_size):
                self._send_batch(pending[start : start + self.batch_size], caller, progress, report)
                if progress.stop:
                    break
            if progress.stop:
                raise QuotaExceeded(
                    f"group {self.group}: Google API quota exceeded ({progress.stop}) after {len(progress.added)} additions and "
                    f"{len(progress.removed)} removals; stopped cleanly, the next run resumes",
                    report(progress.added, progress.removed),
                )
            if progress.fatal:
                reasons = sorted(set(progress.fatal))
                raise ProviderError(
                    f"group {self.group}: {len(progress.fatal)} member changes failed: {'; '.join(reasons[:3])}",
                    report(progress.added, progress.removed),
                )
            pending, progress.retry = progress.retry, []
            if pending:
                attempt += 1
                self._before_retry(pending, attempt, progress, report)

    def _before_retry(self, pending: list[_Op], attempt: int, progress: _Progress, report: Callable[..., SyncReport]) -> None:
        if attempt >= self.backoff.max_attempts:
            what = f"({', '.join(sorted(progress.quota))}) " if progress.quota else ""
            error = QuotaExceeded if progress.quota else ProviderError
            raise error(
                f"group {self.group}: {len(pending)} member changes still failing {what}after {attempt} attempts; the next run resumes",
                report(progress.added, progress.removed),
            )
        log.info("group sync: retrying %d calls (attempt %d)", len(pending), attempt)
        self.backoff.wait(attempt - 1)
        progress.quota.clear()

    def _send_batch(self, chunk: list[_Op], caller: _Caller, progress: _Progress, report: Callable[..., SyncReport]) -> None:
        from googleapiclient.errors import HttpError

        results: dict[str, Any] = {}

        def cb(request_id: str, _response: Any, exception: Exception | None) -> None:
            results[request_id] = exception

        batch = self.service.new_batch(callback=cb)
        for i, op in enumerate(chunk):
            batch.add(self._request(op), request_id=str(i))
        if self.rate_limiter is not None:
            self.rate_limiter.acquire(len(chunk))
        caller.api_calls += len(chunk)
        caller.http_requests += 1
        try:
            batch.execute()
        except HttpError as exc:  # the whole batch was refused
            kind = classify(exc.resp.status, exc.content)
            if kind == FATAL:
                raise ProviderError(
                    f"members batch failed: HTTP {exc.resp.status} {error_reason(exc.content)}", report(progress.added, progress.removed)
                ) from None
            progress.failed(chunk, kind, error_reason(exc.content))
            return
        except _transport_errors():
            progress.retry.extend(chunk)
            return
        for i, op in enumerate(chunk):
            progress.settle(op, results.get(str(i), RuntimeError("no answer in batch response")))


_Op = tuple[str, str, "str | None"]  # (insert | delete, canonical identity, member key to delete)


@dataclass
class _Progress:
    """What a group sync has done so far, and what is left to retry."""

    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    retry: list[_Op] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    quota: set[str] = field(default_factory=set)  # quota reasons seen in this pass (retried)
    stop: str = ""  # a reason that must not be retried in this run (daily limit)

    def failed(self, ops: list[_Op], kind: str, reason: str) -> None:
        if kind == QUOTA:
            self.stop = reason
        else:
            if reason in RETRIED_QUOTA_REASONS:
                self.quota.add(reason)
            self.retry.extend(ops)

    def settle(self, op: _Op, exc: BaseException | None) -> None:
        kind_op, ident, _key = op
        if exc is None:
            (self.added if kind_op == "insert" else self.removed).add(ident)
            return
        status = getattr(getattr(exc, "resp", None), "status", 0)
        content = getattr(exc, "content", b"")
        if kind_op == "insert" and status == 409:  # "Member already exists": success
            self.added.add(ident)
        elif kind_op == "delete" and status == 404:  # already gone: success
            self.removed.add(ident)
        else:
            kind = classify(status, content) if status else RETRY
            if kind == FATAL:
                self.fatal.append(f"members.{kind_op}: HTTP {status} {error_reason(content)}")
            else:
                self.failed([op], kind, error_reason(content))


# --------------------------------------------------------------------------- access grants


def _group_principal(group: str) -> str:
    g = group.strip()
    if ":" in g:
        kind, _, g = g.partition(":")
        if kind != "group":
            raise ValueError(f"only group: principals may be granted access, not {kind}:")
    try:
        return "group:" + canonicalize(g)
    except InvalidEmail as exc:
        raise ValueError(f"group address is invalid: {exc}") from None


def _bq_role(role: str) -> str:
    return _BQ_LEGACY.get(role, role)


@dataclass
class _Plan:
    resource: str
    base: dict[str, Any]  # what we read (policy or dataset)
    new: dict[str, Any] | None  # what we will write (None = nothing to do)
    before: tuple[str, ...]
    after: tuple[str, ...]


class GoogleAccessProvider:
    """Bind ``project_roles`` on ``project`` and ``dataset_roles`` on each BigQuery dataset to the group.

    Read-modify-write with the etag (IAM policy version 3); conflicts (409 ABORTED for IAM,
    412 for BigQuery) re-read and retry; every write is verified by reading back. Bindings of
    other principals and roles are never changed; only ``group:`` principals are bound. The
    documented allow-policy limits are checked on the policy we are about to write, for every
    resource, before the first write.
    """

    def __init__(
        self,
        group: str,
        project: str,
        *,
        project_roles: Sequence[str] = (),
        datasets: Sequence[str] = (),
        dataset_roles: Sequence[str] = ("roles/bigquery.dataViewer",),
        crm: GoogleService | None = None,
        bigquery: GoogleService | None = None,
        backoff: Backoff | None = None,
        max_conflicts: int = 5,
        verify_attempts: int = 5,
    ):
        self.principal = _group_principal(group)
        self.group = self.principal.split(":", 1)[1]
        if not project or not isinstance(project, str):
            raise ValueError("project id is required")
        self.project = project
        for r in project_roles:
            if not isinstance(r, str) or not r.startswith(("roles/", "projects/", "organizations/")):
                raise ValueError(f"project role {r!r} must be an IAM role name like roles/bigquery.dataViewer")
        for r in dataset_roles:
            if not isinstance(r, str) or not (r.startswith("roles/") or r in ("READER", "WRITER", "OWNER")):
                raise ValueError(f"dataset role {r!r} must be an IAM role or READER/WRITER/OWNER")
        if project_roles and crm is None:
            raise ValueError("project_roles need a Cloud Resource Manager client (crm)")
        if datasets and bigquery is None:
            raise ValueError("datasets need a BigQuery client (bigquery)")
        self.project_roles = tuple(sorted(set(project_roles)))
        self.datasets = tuple(sorted(set(datasets)))
        self.dataset_roles = tuple(sorted({_bq_role(r) for r in dataset_roles}))
        self.crm, self.bigquery = crm, bigquery
        self.backoff = backoff or Backoff()
        self.max_conflicts = max_conflicts
        self.verify_attempts = max(1, verify_attempts)

    # -- project IAM policy
    def _project_roles_of(self, policy: dict[str, Any]) -> tuple[str, ...]:
        return tuple(sorted({b["role"] for b in policy.get("bindings", []) if not b.get("condition") and self.principal in b.get("members", [])}))

    def _plan_project(self, caller: _Caller) -> _Plan:
        name = f"projects/{self.project}"
        req = self.crm.resource.projects().getIamPolicy(resource=name, body={"options": {"requestedPolicyVersion": 3}})
        policy = caller.execute(req, "getIamPolicy")
        before = self._project_roles_of(policy)
        missing = [r for r in self.project_roles if r not in before]
        if not missing:
            return _Plan(name, policy, None, before, before)
        import copy

        new = copy.deepcopy(policy)
        bindings = new.setdefault("bindings", [])
        for role in missing:
            for b in bindings:
                if b.get("role") == role and not b.get("condition"):
                    b.setdefault("members", []).append(self.principal)
                    break
            else:
                bindings.append({"role": role, "members": [self.principal]})
        new["version"] = 3  # we requested version 3: conditions we read are written back intact
        self._check_limits(name, new)
        return _Plan(name, policy, new, before, tuple(sorted(set(before) | set(missing))))

    @staticmethod
    def _check_limits(resource: str, policy: dict[str, Any]) -> None:
        # "Each occurrence of a principal counts towards these limits" (Policy.bindings,
        # https://cloud.google.com/resource-manager/reference/rest/Shared.Types/Policy): a list, not a set.
        principals = [m for b in policy.get("bindings", []) for m in b.get("members", [])]
        # The 250 (https://cloud.google.com/iam/docs/allow-policies, "Limits on groups and domains"):
        # "each unique group is counted only once", domains "all occurrences".
        groups = len({m for m in principals if m.startswith("group:")}) + sum(1 for m in principals if m.startswith("domain:"))
        if len(principals) > POLICY_MAX_PRINCIPALS:
            raise LimitExceeded(
                f"{resource}: the allow policy would hold {len(principals)} principals, more than the documented "
                f"limit of {POLICY_MAX_PRINCIPALS}; nothing was changed (remove unused principals first)"
            )
        if groups > POLICY_MAX_GROUPS:
            raise LimitExceeded(
                f"{resource}: the allow policy would hold {groups} Google groups and domains (each group once, each "
                f"domain at every occurrence), more than the documented limit of {POLICY_MAX_GROUPS}; nothing was changed"
            )

    def _write_project(self, plan: _Plan, caller: _Caller) -> None:
        body = {"policy": plan.new}
        caller.execute(self.crm.resource.projects().setIamPolicy(resource=plan.resource, body=body), "setIamPolicy", conflict_ok=(409, 412))

    # -- BigQuery dataset access
    def _dataset_roles_of(self, ds: dict[str, Any]) -> tuple[str, ...]:
        mine = [a for a in ds.get("access", []) if (a.get("groupByEmail") or "").lower() == self.group and not a.get("condition")]
        return tuple(sorted({_bq_role(a.get("role", "")) for a in mine}))

    def _plan_dataset(self, dataset: str, caller: _Caller) -> _Plan:
        name = f"datasets/{self.project}/{dataset}"
        # accessPolicyVersion=3: below it, conditional entries come back with altered role names
        # and a patch of such a dataset is refused (datasets.get / datasets.patch reference).
        req = self.bigquery.resource.datasets().get(projectId=self.project, datasetId=dataset, accessPolicyVersion=ACCESS_POLICY_VERSION)
        ds = caller.execute(req, "datasets.get")
        if "access" not in ds:
            raise ProviderError(
                f"{name}: the dataset was read without its access list; the service account needs "
                "bigquery.datasets.getIamPolicy (roles/bigquery.dataOwner); nothing was changed"
            )
        before = self._dataset_roles_of(ds)
        missing = [r for r in self.dataset_roles if r not in before]
        if not missing:
            return _Plan(name, ds, None, before, before)
        access = list(ds.get("access", [])) + [{"role": r, "groupByEmail": self.group} for r in missing]
        principals = {tuple(sorted((k, str(v)) for k, v in a.items() if k != "role")) for a in access}
        if len(principals) > 2500:
            # https://cloud.google.com/bigquery/quotas#dataset_limits : 2,500 authorized resources per dataset ACL
            raise LimitExceeded(f"{name}: the dataset access list would exceed 2,500 entries; nothing was changed")
        return _Plan(name, ds, {"access": access}, before, tuple(sorted(set(before) | set(missing))))

    def _write_dataset(self, plan: _Plan, caller: _Caller) -> None:
        dataset = plan.resource.rsplit("/", 1)[1]
        req = self.bigquery.resource.datasets().patch(
            projectId=self.project, datasetId=dataset, body=plan.new, accessPolicyVersion=ACCESS_POLICY_VERSION
        )
        req.headers["If-Match"] = plan.base["etag"]
        caller.execute(req, "datasets.patch", conflict_ok=(409, 412))

    # -- the whole thing
    def _plan(self, resource: str, caller: _Caller) -> _Plan:
        if resource.startswith("projects/"):
            return self._plan_project(caller)
        return self._plan_dataset(resource.rsplit("/", 1)[1], caller)

    def resources(self) -> list[str]:
        out = [f"projects/{self.project}"] if self.project_roles else []
        return out + [f"datasets/{self.project}/{d}" for d in self.datasets]

    def ensure(self, dry_run: bool = False) -> AccessReport:
        caller = _Caller(self.backoff)
        # Read and check everything first: a limit problem anywhere stops the run before any write.
        plans = [self._plan(r, caller) for r in self.resources()]
        if dry_run:
            return AccessReport(tuple(AccessChange(p.resource, p.before, p.after) for p in plans), caller.api_calls, 0, True)
        conflicts = 0
        changes = []
        for plan in plans:
            plan, tries = self._write_with_retries(plan, caller)
            conflicts += tries
            changes.append(AccessChange(plan.resource, plan.before, plan.after))
        for ch in changes:
            if ch.changed:
                self._verify(ch, caller)
        return AccessReport(tuple(changes), caller.api_calls, conflicts, False)

    def _write_with_retries(self, plan: _Plan, caller: _Caller) -> tuple[_Plan, int]:
        """Write ``plan``; on 409 ABORTED (IAM) / 412 (BigQuery) re-read, re-apply, write again."""
        from googleapiclient.errors import HttpError

        tries = 0
        while plan.new is not None:
            try:
                if plan.resource.startswith("projects/"):
                    self._write_project(plan, caller)
                else:
                    self._write_dataset(plan, caller)
                break
            except HttpError as exc:  # someone wrote in between
                tries += 1
                if tries > self.max_conflicts:
                    raise ProviderError(f"{plan.resource}: still conflicting after {tries} read-modify-write attempts (HTTP {exc.resp.status})") from None
                log.info("%s changed under us (HTTP %s); re-reading", plan.resource, exc.resp.status)
                self.backoff.wait(tries - 1)
                before = plan.before
                plan = self._plan(plan.resource, caller)
                plan.before = before
        return plan, tries

    def _verify(self, change: AccessChange, caller: _Caller) -> None:
        """Read ``change.resource`` back until it shows the roles. IAM reads right after a write
        can be stale (eventual consistency, https://cloud.google.com/iam/docs/retry-strategy), so
        a missing role is re-read with backoff, ``verify_attempts`` times in all."""
        for attempt in range(self.verify_attempts):
            check = self._plan(change.resource, caller)
            if check.new is None:
                return
            if attempt + 1 < self.verify_attempts:
                log.info("%s: read-back does not show the change yet; reading again", change.resource)
                self.backoff.wait(attempt)
        raise VerificationFailed(
            f"{change.resource}: after writing, the group still lacks {sorted(set(change.after) - set(check.before))} "
            f"({self.verify_attempts} reads)"
        )
