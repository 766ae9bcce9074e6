"""Google providers against the emulator, through the official client library.

Covers the group sync contract, fault-injection convergence (5xx, 429, rateLimitExceeded,
quotaExceeded with resume), access grants with etags, a concurrent writer, the documented
policy limits and a 0 -> 20,000 -> 1% change scale run.
"""

from __future__ import annotations

import math
import random

import pytest

from cdsops.emulator import Emulator
from cdsops.providers.base import (
    AccessProvider,
    GroupProvider,
    LimitExceeded,
    ProviderError,
    QuotaExceeded,
    VerificationFailed,
)
from cdsops.providers.google import (
    GoogleAccessProvider,
    GoogleGroupProvider,
    build_service,
)
from cdsops.providers.retry import Backoff

pytestmark = pytest.mark.integration
G = "data@example.org"


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)


@pytest.fixture()
def emu():
    with Emulator() as e:
        e.create_group(G)
        yield e


@pytest.fixture()
def sleeps() -> Sleeps:
    return Sleeps()


def group(emu: Emulator, sleeps: Sleeps, **kw) -> GoogleGroupProvider:
    return GoogleGroupProvider(G, build_service("directory", emulator=emu.url), backoff=Backoff(sleep=sleeps, rng=random.Random(0)), **kw)


def people(n: int, start: int = 0) -> list[str]:
    return [f"student{i:05d}@example.org" for i in range(start, start + n)]


# --------------------------------------------------------------------------- group sync


def test_sync_sends_only_differences_compared_by_canonical_identity(emu: Emulator, sleeps: Sleeps) -> None:
    emu.create_group(G, ["First.Last@gmail.com", "old@example.org"])
    emu.state.groups[G]["owner@example.org"] = {"email": "owner@example.org", "role": "OWNER", "type": "USER"}
    emu.state.groups[G]["nested@example.org"] = {"email": "nested@example.org", "role": "MEMBER", "type": "GROUP"}
    p = group(emu, sleeps)
    assert isinstance(p, GroupProvider)
    assert p.list_members() == ["firstlast@gmail.com", "old@example.org"]
    emu.reset_counters()
    dry = p.sync(["firstlast+course@googlemail.com", "New@Example.org"], dry_run=True)
    assert (dry.added, dry.removed, dry.unchanged, dry.unmanaged, dry.dry_run) == (("new@example.org",), ("old@example.org",), 1, 2, True)
    assert emu.calls() == emu.calls("directory.members.list") == 1  # a dry run only reads
    rep = p.sync(["firstlast+course@googlemail.com", "New@Example.org"])
    assert (rep.added, rep.removed, rep.unchanged) == (("new@example.org",), ("old@example.org",), 1)
    assert rep.api_calls == 1 + 2 and rep.http_requests == 2  # one list page, one batch of two calls
    assert emu.members(G) == ["first.last@gmail.com", "nested@example.org", "new@example.org", "owner@example.org"]
    again = p.sync(["firstlast@gmail.com", "new@example.org"])
    assert not again.changed and again.api_calls == 1  # no-change sync costs the list pages only
    assert "@" not in str(again.summary())
    # a wanted person who is an owner already has access: not added (409) and reported again on every run
    owner = p.sync(["firstlast@gmail.com", "new@example.org", "owner@example.org"])
    assert not owner.changed and owner.unchanged == 3 and emu.calls("directory.members.insert") == 1


def test_batches_hold_at_most_batch_size_calls(emu: Emulator, sleeps: Sleeps) -> None:
    rep = group(emu, sleeps).sync(people(2500))
    assert len(rep.added) == 2500 and emu.calls("batch") == 50  # MEMBER_WRITE_BATCH = 50
    assert rep.api_calls == 1 + 2500 and not sleeps.calls  # within the concurrent-write budget: no retry
    small = group(emu, sleeps, batch_size=25).sync(people(2500, 100))  # 100 removed, 100 added
    assert emu.calls("batch") == 50 + 8 and len(small.added) == len(small.removed) == 100
    with pytest.raises(ValueError, match="1000"):
        group(emu, sleeps, batch_size=1001)
    with pytest.raises(ValueError, match="200"):
        group(emu, sleeps, page_size=500)


@pytest.mark.parametrize(
    "faults",
    [
        [{"kind": "503", "match": "directory.members.insert", "times": 40}],
        [{"kind": "429", "match": "directory.members.insert", "skip": 5, "times": 30},
         {"kind": "rateLimitExceeded", "match": "directory.members.delete", "times": 10}],
        [{"kind": "500", "match": "batch", "times": 2}, {"kind": "500", "match": "directory.members.list", "times": 2},
         {"kind": "userRateLimitExceeded", "match": "directory", "skip": 20, "times": 15}],
    ],
    ids=["503-on-insert", "429-and-403-rate", "500-on-batch-and-list"],
)
def test_sync_converges_through_faults(emu: Emulator, sleeps: Sleeps, faults: list[dict]) -> None:
    emu.create_group(G, people(60, 1000))
    desired = people(120)
    for f in faults:
        emu.add_fault(f)
    rep = group(emu, sleeps, batch_size=50).sync(desired)
    assert emu.members(G) == sorted(desired)
    # each change reported exactly once, even though calls were retried
    assert list(rep.added) == sorted(desired) and list(rep.removed) == people(60, 1000)
    assert sleeps.calls and all(s <= 32 for s in sleeps.calls)
    assert all(f.exhausted for f in emu.state.faults)
    assert not group(emu, sleeps).sync(desired).changed


def test_quota_exceeded_on_member_writes_is_retried_with_backoff(emu: Emulator, sleeps: Sleeps) -> None:
    """Large batches overrun the concurrent-write budget (403 quotaExceeded "Request rate higher
    than configured."): the refused calls are retried with backoff and the sync converges."""
    emu.add_fault({"kind": "quotaExceeded", "match": "directory.members.insert", "skip": 10, "times": 5})
    p = group(emu, sleeps, batch_size=120)  # more than the emulator's budget of 50 per batch
    rep = p.sync(people(240))
    assert emu.members(G) == people(240) and list(rep.added) == people(240)
    assert sleeps.calls  # backed off before retrying
    assert emu.calls("directory.members.insert") > 240  # refused calls were sent again


def test_quota_exceeded_that_persists_stops_cleanly(emu: Emulator, sleeps: Sleeps) -> None:
    emu.add_fault({"kind": "quotaExceeded", "match": "directory.members.insert", "skip": 20, "times": -1})
    p = GoogleGroupProvider(G, build_service("directory", emulator=emu.url), backoff=Backoff(max_attempts=3, sleep=sleeps))
    with pytest.raises(QuotaExceeded, match="quotaExceeded.* after 3 attempts; the next run resumes") as err:
        p.sync(people(30))
    assert len(err.value.report.added) == 20 and len(sleeps.calls) == 2


def test_daily_limit_stops_cleanly_and_the_next_run_resumes(emu: Emulator, sleeps: Sleeps) -> None:
    desired = people(2300)
    emu.add_fault({"kind": "dailyLimitExceeded", "match": "directory.members.insert", "skip": 1220, "times": 1})
    p = group(emu, sleeps)
    with pytest.raises(QuotaExceeded, match="quota exceeded .* the next run resumes") as err:
        p.sync(desired)
    first = err.value.report
    assert 1200 <= len(first.added) < 1250  # the batch with the failure finished, no further batch was sent
    assert emu.calls("batch") == 25 and not sleeps.calls
    assert "student" not in str(err.value)  # the group address only, never a person
    assert emu.members(G) == sorted(first.added)
    second = p.sync(desired)
    assert set(first.added).isdisjoint(second.added)  # nothing added (or logged) twice
    assert sorted(first.added + second.added) == sorted(desired)
    assert emu.members(G) == sorted(desired)


def test_ambiguous_insert_is_settled_by_409_and_counted_once(emu: Emulator, sleeps: Sleeps) -> None:
    # The server applied the insert but the answer was lost: the retry gets 409 "Member already exists".
    p = group(emu, sleeps)
    svc = p.service
    svc.resource.members().insert(groupKey=G, body={"email": "a@example.org"}).execute()
    rep = p.sync(["a@example.org", "b@example.org"])
    assert rep.added == ("b@example.org",)
    # delete 404 counts as success too: a member removed by someone else between list and delete
    emu.add_fault({"kind": "503", "match": "directory.members.delete", "times": 1})
    orig = p._request

    def racing(op):
        if op[0] == "delete":
            emu.state.groups[G].pop("a@example.org", None)
        return orig(op)

    p._request = racing
    rep = p.sync(["b@example.org"])
    assert rep.removed == ("a@example.org",) and emu.members(G) == ["b@example.org"]


def test_persistent_failure_reports_partial_progress_without_addresses(emu: Emulator, sleeps: Sleeps) -> None:
    emu.add_fault({"kind": "503", "match": "directory.members.insert", "skip": 3, "times": -1})
    p = GoogleGroupProvider(G, build_service("directory", emulator=emu.url), backoff=Backoff(max_attempts=3, sleep=sleeps))
    with pytest.raises(ProviderError, match="still failing after 3 attempts; the next run resumes") as err:
        p.sync(people(10))
    assert len(err.value.report.added) == 3 and "student" not in str(err.value)
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize(
    "setup,desired,msg",
    [
        (lambda e: e.state.groups.pop(G), [], "members.list failed: HTTP 404 notFound"),
        (lambda e: None, ["not-an-address"], "not a valid address"),
    ],
)
def test_clear_errors(emu: Emulator, sleeps: Sleeps, setup, desired, msg) -> None:
    setup(emu)
    with pytest.raises(ProviderError, match=msg):
        group(emu, sleeps).sync(desired)


def test_emulator_endpoint_from_environment(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSOPS_GOOGLE_EMULATOR", emu.url)
    svc = build_service("directory")
    assert svc.batch_uri == emu.url + "/batch"
    assert GoogleGroupProvider(G, svc).list_members() == []
    monkeypatch.setenv("CDSOPS_GOOGLE_EMULATOR", "http://10.1.2.3:80")
    with pytest.raises(ValueError, match="loopback"):
        build_service("directory")


# --------------------------------------------------------------------------- access grants


@pytest.fixture()
def cloud(emu: Emulator) -> Emulator:
    emu.create_project("proj", [
        {"role": "roles/owner", "members": ["user:admin@example.org"]},
        {"role": "roles/bigquery.jobUser", "members": ["user:teacher@example.org"]},
        {"role": "roles/bigquery.jobUser", "members": ["group:data@example.org"],
         "condition": {"title": "weekdays", "expression": "request.time.getDayOfWeek() < 5"}},
    ])
    emu.create_dataset("proj", "mimic", [{"role": "OWNER", "userByEmail": "admin@example.org"}])
    emu.create_dataset("proj", "notes", [{"role": "READER", "specialGroup": "projectReaders"}])
    return emu


def access(emu: Emulator, sleeps: Sleeps, **kw) -> GoogleAccessProvider:
    args = {"project_roles": ["roles/bigquery.jobUser", "roles/bigquery.readSessionUser"], "datasets": ["mimic", "notes"],
                "crm": build_service("crm", emulator=emu.url), "bigquery": build_service("bigquery", emulator=emu.url),
                "backoff": Backoff(sleep=sleeps, rng=random.Random(0))}
    args.update(kw)
    return GoogleAccessProvider("Data@Example.org", "proj", **args)


def test_access_grants_to_the_group_only_and_is_idempotent(cloud: Emulator, sleeps: Sleeps) -> None:
    before_policy = cloud.policy("proj")
    a = access(cloud, sleeps)
    assert isinstance(a, AccessProvider)
    dry = a.ensure(dry_run=True)
    assert dry.changed and cloud.policy("proj") == before_policy and cloud.calls("crm.setIamPolicy") == 0
    assert dry.diff()["after"]["projects/proj"] == ["roles/bigquery.jobUser", "roles/bigquery.readSessionUser"]
    rep = a.ensure()
    assert rep.diff() == {
        "before": {"projects/proj": [], "datasets/proj/mimic": [], "datasets/proj/notes": []},
        "after": {"projects/proj": ["roles/bigquery.jobUser", "roles/bigquery.readSessionUser"],
                  "datasets/proj/mimic": ["READER"], "datasets/proj/notes": ["READER"]},
    }
    pol = cloud.policy("proj")
    assert pol["version"] == 3
    # bindings we do not own are untouched, the conditional one included
    for b in before_policy["bindings"]:
        if b["role"] != "roles/bigquery.jobUser" or b.get("condition"):
            assert b in pol["bindings"]
    job = [b for b in pol["bindings"] if b["role"] == "roles/bigquery.jobUser" and not b.get("condition")]
    assert job == [{"role": "roles/bigquery.jobUser", "members": ["user:teacher@example.org", "group:data@example.org"]}]
    assert all(m.startswith(("user:admin", "user:teacher", "group:")) for b in pol["bindings"] for m in b["members"])
    assert cloud.dataset("proj", "mimic")["access"] == [{"role": "OWNER", "userByEmail": "admin@example.org"},
                                                        {"role": "READER", "groupByEmail": "data@example.org"}]
    writes = cloud.calls("crm.setIamPolicy") + cloud.calls("bigquery.datasets.patch")
    assert writes == 3
    again = a.ensure()
    assert not again.changed and cloud.calls("crm.setIamPolicy") + cloud.calls("bigquery.datasets.patch") == writes


def test_audit_configs_survive_the_providers_write(cloud: Emulator, sleeps: Sleeps) -> None:
    audit = [{"service": "bigquery.googleapis.com", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    cloud.state.policies["proj"]["auditConfigs"] = audit
    assert access(cloud, sleeps).ensure().changed
    assert cloud.policy("proj")["auditConfigs"] == audit  # the Data Access audit logs stay on


def test_concurrent_writer_keeps_both_bindings(cloud: Emulator, sleeps: Sleeps) -> None:
    cloud.add_fault({"kind": "concurrent_writer", "target": "projects/proj", "role": "roles/viewer", "member": "group:auditors@example.org"})
    cloud.add_fault({"kind": "concurrent_writer", "target": "datasets/proj/mimic", "role": "WRITER", "member": "group:etl@example.org"})
    rep = access(cloud, sleeps).ensure()
    assert rep.conflicts_retried == 2
    pol = cloud.policy("proj")
    assert {"role": "roles/viewer", "members": ["group:auditors@example.org"]} in pol["bindings"]
    assert any(b["role"] == "roles/bigquery.readSessionUser" and "group:data@example.org" in b["members"] for b in pol["bindings"])
    acl = cloud.dataset("proj", "mimic")["access"]
    assert {"role": "WRITER", "groupByEmail": "etl@example.org"} in acl and {"role": "READER", "groupByEmail": "data@example.org"} in acl
    assert cloud.calls("crm.setIamPolicy") == 2  # one refused with 409, one accepted
    assert cloud.calls("bigquery.datasets.patch") == 3  # mimic: 412 then ok; notes: ok


def test_access_retries_transient_errors(cloud: Emulator, sleeps: Sleeps) -> None:
    cloud.add_fault({"kind": "503", "match": "crm.setIamPolicy", "times": 2})
    cloud.add_fault({"kind": "429", "match": "bigquery.datasets.get", "times": 2})
    assert access(cloud, sleeps).ensure().changed
    assert len(sleeps.calls) == 4 and not access(cloud, sleeps).ensure().changed


USERS_750 = [f"user:u{i}@example.org" for i in range(750)]
GROUPS_125 = [f"group:g{i}@example.org" for i in range(125)]
DOMAINS_750 = [f"domain:d{i}.example.org" for i in range(750)]
DOMAINS_125 = DOMAINS_750[:125]
GROUPS_H125 = [f"group:h{i}@example.org" for i in range(125)]


@pytest.mark.parametrize(
    "bindings,msg",
    [
        # each principal twice: 1,500 occurrences (+ the group under its two roles = 1,502), only 750 distinct
        ([{"role": "roles/viewer", "members": USERS_750}, {"role": "roles/browser", "members": USERS_750}],
         "1502 principals, more than the documented limit of 1500"),
        ([{"role": "roles/viewer", "members": DOMAINS_750}, {"role": "roles/browser", "members": DOMAINS_750}],
         "1502 principals, more than the documented limit of 1500"),
        # the 250 of groups and domains: 125 domains twice + our group = 251
        ([{"role": "roles/viewer", "members": DOMAINS_125}, {"role": "roles/browser", "members": DOMAINS_125}],
         "251 Google groups and domains"),
        # 250 distinct other groups + ours = 251 distinct groups
        ([{"role": "roles/viewer", "members": GROUPS_125}, {"role": "roles/browser", "members": GROUPS_125 + GROUPS_H125}],
         "251 Google groups and domains"),
    ],
    ids=["users-twice", "domains-twice", "domains-at-every-occurrence", "groups-distinct"],
)
def test_policy_limits_count_every_occurrence_before_anything_is_sent(cloud: Emulator, sleeps: Sleeps, bindings: list, msg: str) -> None:
    cloud.create_project("proj", bindings)
    with pytest.raises(LimitExceeded, match=msg):
        access(cloud, sleeps).ensure()
    assert cloud.calls("crm.setIamPolicy") == 0 and cloud.calls("bigquery.datasets.patch") == 0


def test_a_group_in_several_bindings_counts_once_toward_the_250(cloud: Emulator, sleeps: Sleeps) -> None:
    # 125 groups in two bindings: 250 occurrences, 125 distinct (+ ours = 126): within both limits
    cloud.create_project("proj", [{"role": "roles/viewer", "members": GROUPS_125}, {"role": "roles/browser", "members": GROUPS_125}])
    assert access(cloud, sleeps).ensure().changed
    assert cloud.calls("crm.setIamPolicy") == 1


def test_quota_on_access_stops_cleanly(cloud: Emulator, sleeps: Sleeps) -> None:
    cloud.add_fault({"kind": "dailyLimitExceeded", "match": "crm.getIamPolicy"})
    with pytest.raises(QuotaExceeded, match="next run resumes"):
        access(cloud, sleeps).ensure()
    assert cloud.calls("bigquery.datasets.patch") == 0
    assert access(cloud, sleeps).ensure().changed


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"group": "user:someone@example.org"}, "only group: principals"),
        ({"group": "not an address"}, "group address is invalid"),
        ({"project_roles": ["owner"]}, "must be an IAM role name"),
        ({"dataset_roles": ["roles/x", "ADMIN"]}, "READER/WRITER/OWNER"),
        ({"crm": None}, "Cloud Resource Manager client"),
    ],
)
def test_access_config_errors(cloud: Emulator, sleeps: Sleeps, kw: dict, msg: str) -> None:
    g = kw.pop("group", "data@example.org")
    args = {"project_roles": ["roles/bigquery.jobUser"], "datasets": ["mimic"], "crm": build_service("crm", emulator=cloud.url),
                "bigquery": build_service("bigquery", emulator=cloud.url)}
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        GoogleAccessProvider(g, "proj", **args)


def test_dataset_with_conditional_entries_is_read_and_patched_at_access_policy_version_3(cloud: Emulator, sleeps: Sleeps) -> None:
    cond = {"title": "until-2030", "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}
    entry = {"role": "roles/bigquery.dataViewer", "groupByEmail": "tmp@example.org", "condition": cond}
    cloud.create_dataset("proj", "mimic", [{"role": "OWNER", "userByEmail": "admin@example.org"}, entry])
    rep = access(cloud, sleeps, project_roles=[], datasets=["mimic"], crm=None).ensure()
    assert rep.diff()["after"] == {"datasets/proj/mimic": ["READER"]}
    acl = cloud.dataset("proj", "mimic")["access"]
    assert entry in acl and {"role": "READER", "groupByEmail": "data@example.org"} in acl  # the condition survived


@pytest.mark.parametrize("role,ok", [("roles/bigquery.dataOwner", True), ("roles/bigquery.dataEditor", False)])
def test_dataset_access_needs_the_documented_role(role: str, ok: bool, sleeps: Sleeps) -> None:
    with Emulator(bigquery_roles=(role,)) as e:
        e.create_dataset("proj", "mimic", [{"role": "OWNER", "userByEmail": "admin@example.org"}])
        a = access(e, sleeps, project_roles=[], datasets=["mimic"], crm=None)
        if ok:
            assert a.ensure().changed
        else:
            with pytest.raises(ProviderError, match="datasets.patch failed: HTTP 403 accessDenied"):
                a.ensure()


def test_a_stale_read_back_is_read_again_before_verification_fails(sleeps: Sleeps) -> None:
    with Emulator(stale_reads=2) as e:
        e.create_project("proj", [{"role": "roles/owner", "members": ["user:admin@example.org"]}])
        e.create_dataset("proj", "mimic", [{"role": "OWNER", "userByEmail": "admin@example.org"}])
        rep = access(e, sleeps, datasets=["mimic"]).ensure()
        assert rep.changed and len(sleeps.calls) == 4  # two stale reads per resource, each followed by a backoff
    with Emulator(stale_reads=5) as e:
        e.create_project("proj", [{"role": "roles/owner", "members": ["user:admin@example.org"]}])
        with pytest.raises(VerificationFailed, match=r"still lacks .* \(3 reads\)"):
            access(e, sleeps, datasets=[], bigquery=None, verify_attempts=3).ensure()


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_scale_zero_to_20000_then_one_percent_change(emu: Emulator, sleeps: Sleeps) -> None:
    p = group(emu, sleeps)
    desired = people(20000)
    first = p.sync(desired)
    assert len(first.added) == 20000 and first.http_requests == 1 + 400  # batches of 50
    assert emu.state.groups[G].__len__() == 20000
    changed = people(19900, 100) + people(100, 50000)  # 100 leave, 100 join
    emu.reset_counters()
    second = p.sync(changed)
    pages = math.ceil(20000 / 200)
    assert (len(second.added), len(second.removed), second.unchanged) == (100, 100, 19900)
    assert second.api_calls == pages + 200 and second.http_requests == pages + 4
    assert emu.calls() == pages + 200
    assert emu.members(G) == sorted(changed)


# --------------------------------------------------------------------------- the documented per-minute quota


def test_pacing_keeps_a_sync_under_the_per_minute_quota(sleeps: Sleeps) -> None:
    """The Directory API answers 403 userRateLimitExceeded beyond 2,400 queries per minute per
    user; the emulator enforces a (scaled-down) sliding window and the provider paces itself."""
    from cdsops.providers.retry import RateLimiter

    with Emulator(rate_limits={"directory": (40, 1.0)}) as emu:
        emu.create_group(G)
        svc = build_service("directory", emulator=emu.url)
        unpaced = GoogleGroupProvider(G, svc, backoff=Backoff(sleep=sleeps, max_attempts=3))
        with pytest.raises(ProviderError, match="still failing"):
            unpaced.sync(people(100))  # backoff alone (here: no real sleep) cannot beat the window
        import time

        time.sleep(1.2)  # let the window empty
        paced = GoogleGroupProvider(G, svc, backoff=Backoff(sleep=sleeps), rate_limiter=RateLimiter(40, 1.0))
        sleeps.calls.clear()
        rep = paced.sync(people(100))
        assert emu.members(G) == people(100) and not sleeps.calls  # not a single 403 to retry
        assert paced.batch_size == 40 and paced.rate_limiter.waited > 0
        assert rep.unchanged + len(rep.added) == 100


def test_production_credentials_errors_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("CDSOPS_GOOGLE_EMULATOR", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud application-default credentials
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # never probe a metadata server
    with pytest.raises(ProviderError, match="cannot load the service-account key"):
        build_service("directory", credentials_file=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account"}')
    with pytest.raises(ProviderError, match="cannot load the service-account key"):
        build_service("directory", credentials_file=str(bad))
    with pytest.raises(ProviderError, match="no Google credentials for the crm API"):
        build_service("crm")
    with pytest.raises(ValueError, match="unknown Google API"):
        build_service("gmail")


def test_production_path_uses_the_key_scopes_and_delegated_subject(emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A throwaway service-account key whose token_uri is the emulator's token endpoint: each
    client asks for a token with the documented scope (and the Directory client for the
    delegated subject), then sends its request to Google's own host (unreachable here)."""
    import json as _json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    monkeypatch.delenv("CDSOPS_GOOGLE_EMULATOR", raising=False)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    sa = tmp_path / "sa.json"
    sa.write_text(_json.dumps({
        "type": "service_account", "project_id": "course-project", "private_key_id": "0", "private_key": pem,
        "client_email": "cdsops-sync@course-project.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": emu.url + "/token",
    }))
    sent = {
        "directory": (lambda r: r.members().list(groupKey=G, maxResults=200), "groups-admin@example.org",
                      "https://www.googleapis.com/auth/admin.directory.group.member", "https://admin.googleapis.com/admin/directory/v1/groups/"),
        "crm": (lambda r: r.projects().getIamPolicy(resource="projects/p", body={}), None,
                "https://www.googleapis.com/auth/cloud-platform", "https://cloudresourcemanager.googleapis.com/v3/projects/p:getIamPolicy"),
        "bigquery": (lambda r: r.datasets().get(projectId="p", datasetId="d"), None,
                     "https://www.googleapis.com/auth/bigquery", "https://bigquery.googleapis.com/bigquery/v2/projects/p/datasets/d"),
    }
    for api, (call, subject, scope, url) in sent.items():
        svc = build_service(api, credentials_file=str(sa), subject=subject, timeout=5)
        req = call(svc.resource)
        assert req.uri.startswith(url)
        with pytest.raises(Exception):  # noqa: B017, PT011 (Google is unreachable here, or refuses the invented key: either way it fails)
            req.execute(num_retries=0)
        claims = emu.token_requests[-1]
        assert claims == {"iss": "cdsops-sync@course-project.iam.gserviceaccount.com", "sub": subject, "scope": scope,
                          "aud": "https://oauth2.googleapis.com/token"}
    assert len(emu.token_requests) == 3
    assert build_service("directory", credentials_file=str(sa), subject="a@example.org").batch_uri == "https://admin.googleapis.com/batch"


def test_every_client_takes_the_key_from_google_application_credentials(emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """One credentials source: with only GOOGLE_APPLICATION_CREDENTIALS set, the BigQuery client
    (roster, registrations) and the providers' clients all ask for tokens with that key."""
    import json as _json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from cdsops import bq

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    sa = tmp_path / "google-sa.json"
    sa.write_text(_json.dumps({
        "type": "service_account", "project_id": "course-project", "private_key_id": "0", "private_key": pem,
        "client_email": "cdsops-sync@course-project.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": emu.url + "/token",
    }))
    for var in ("CDSOPS_GOOGLE_EMULATOR", "CDSOPS_BIGQUERY_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa))
    monkeypatch.setenv("CDSOPS_BIGQUERY_TIMEOUT", "2")
    for drive in (False, True):
        client = bq.make_client("course-project", drive=drive)
        with pytest.raises(Exception):  # noqa: B017, PT011 (Google itself is unreachable from here; the token request is what counts)
            client.get_table("course-project.forms.reg", timeout=2, retry=None)
        scope = emu.token_requests[-1]["scope"].split()
        assert scope == ["https://www.googleapis.com/auth/bigquery"] + (["https://www.googleapis.com/auth/drive.readonly"] if drive else [])
        assert emu.token_requests[-1]["iss"] == "cdsops-sync@course-project.iam.gserviceaccount.com"
    svc = build_service("directory", subject="groups-admin@example.org", timeout=2)  # no credentials_file: the same key
    with pytest.raises(Exception):  # noqa: B017, PT011 (as above)
        svc.resource.members().list(groupKey=G).execute(num_retries=0)
    assert emu.token_requests[-1]["sub"] == "groups-admin@example.org"
    assert emu.token_requests[-1]["iss"] == "cdsops-sync@course-project.iam.gserviceaccount.com"
