"""The emulator answers like the documented Google APIs, through the official client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from googleapiclient.errors import HttpError

from cdsops.emulator import Emulator, Fault
from cdsops.providers.google import build_service
from cdsops.providers.retry import error_reason

pytestmark = pytest.mark.integration
G = "data@example.org"


@pytest.fixture()
def emu():
    with Emulator() as e:
        e.create_group(G)
        e.create_project("proj", [{"role": "roles/owner", "members": ["user:admin@example.org"]}])
        e.create_dataset("proj", "mimic", [{"role": "roles/bigquery.dataOwner", "userByEmail": "admin@example.org"}])
        yield e


def _err(exc: HttpError) -> tuple[int, str]:
    return exc.resp.status, error_reason(exc.content)


def test_members_insert_list_delete_and_documented_errors(emu: Emulator) -> None:
    m = build_service("directory", emulator=emu.url).resource.members()
    made = m.insert(groupKey=G, body={"email": "First.Last@gmail.com", "role": "MEMBER"}).execute()
    assert made["kind"] == "admin#directory#member" and made["email"] == "first.last@gmail.com" and made["role"] == "MEMBER"
    with pytest.raises(HttpError) as dup:  # the same address in other letter case
        m.insert(groupKey=G, body={"email": "FIRST.LAST@gmail.com"}).execute()
    assert _err(dup.value) == (409, "duplicate") and "Member already exists" in str(dup.value)
    # Google has no Gmail dot/+tag rule for group members: another spelling is another member
    other = m.insert(groupKey=G, body={"email": "firstlast+x@googlemail.com"}).execute()
    assert other["email"] == "firstlast+x@googlemail.com"
    m.delete(groupKey=G, memberKey="firstlast+x@googlemail.com").execute()
    m.delete(groupKey=G, memberKey="first.last@gmail.com").execute()
    with pytest.raises(HttpError) as gone:
        m.delete(groupKey=G, memberKey="first.last@gmail.com").execute()
    assert _err(gone.value) == (404, "notFound")
    with pytest.raises(HttpError) as nog:
        m.list(groupKey="nosuch@example.org").execute()
    assert _err(nog.value) == (404, "notFound")


def test_members_list_pages_of_at_most_200(emu: Emulator) -> None:
    emu.create_group("big@example.org", [f"u{i:04d}@example.org" for i in range(450)])
    m = build_service("directory", emulator=emu.url).resource.members()
    seen, pages, token = [], 0, None
    while True:
        page = m.list(groupKey="big@example.org", maxResults=200, pageToken=token).execute()
        pages += 1
        seen += [x["email"] for x in page["members"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and len(seen) == 450 == len(set(seen))
    with pytest.raises(HttpError) as too_big:
        m.list(groupKey="big@example.org", maxResults=201).execute()
    assert _err(too_big.value) == (400, "invalid")
    assert m.list(groupKey=G).execute().get("members") is None  # empty group: no members key


def test_batch_endpoint_serves_the_client_and_counts_each_call(emu: Emulator) -> None:
    svc = build_service("directory", emulator=emu.url)
    got = {}
    batch = svc.new_batch(callback=lambda rid, resp, exc: got.__setitem__(rid, exc or resp))
    for i in range(5):
        batch.add(svc.resource.members().insert(groupKey=G, body={"email": f"b{i}@example.org"}), request_id=str(i))
    batch.add(svc.resource.members().insert(groupKey=G, body={"email": "b0@example.org"}), request_id="dup")
    batch.execute()
    assert emu.http_requests == 1 and emu.calls("directory.members.insert") == 6
    assert all(got[str(i)]["email"] == f"b{i}@example.org" for i in range(5))
    assert isinstance(got["dup"], HttpError) and got["dup"].resp.status == 409
    # the official client's own batch URI points at Google, not at api_endpoint
    assert svc.resource.new_batch_http_request()._batch_uri == "https://admin.googleapis.com/batch"


def test_the_client_never_sends_more_than_1000_calls_and_a_full_batch_is_served() -> None:
    """The documented 1,000-call limit is enforced by the official client itself (it refuses the
    1,001st ``add``), so no raw-HTTP test of a larger batch: the client cannot send one."""
    from googleapiclient.errors import BatchError

    with Emulator(member_write_budget=None) as e:
        e.create_group(G)
        svc = build_service("directory", emulator=e.url)
        batch = svc.new_batch(callback=lambda *_: None)
        for i in range(1000):
            batch.add(svc.resource.members().insert(groupKey=G, body={"email": f"x{i}@example.org"}))
        with pytest.raises(BatchError, match="1000"):
            batch.add(svc.resource.members().insert(groupKey=G, body={"email": "one-too-many@example.org"}))
        batch.execute()
        assert e.http_requests == 1 and e.calls("directory.members.insert") == 1000 and len(e.members(G)) == 1000


def test_member_writes_beyond_the_concurrent_budget_get_quota_exceeded(emu: Emulator) -> None:
    svc = build_service("directory", emulator=emu.url)
    got: dict[str, object] = {}
    batch = svc.new_batch(callback=lambda rid, resp, exc: got.__setitem__(rid, exc or resp))
    for i in range(60):
        batch.add(svc.resource.members().insert(groupKey=G, body={"email": f"q{i}@example.org"}), request_id=str(i))
    batch.execute()
    refused = [rid for rid, r in got.items() if isinstance(r, HttpError)]
    assert len(refused) == 10 and len(emu.members(G)) == 50
    err = got[refused[0]]
    body = json.loads(err.content)["error"]
    assert (err.resp.status, body["errors"][0]["reason"], body["message"]) == (403, "quotaExceeded", "Request rate higher than configured.")
    assert emu.calls("directory.members.insert") == 60  # refused calls count too


def test_iam_policy_etag_conflict_and_limits(emu: Emulator) -> None:
    p = build_service("crm", emulator=emu.url).resource.projects()
    pol = p.getIamPolicy(resource="projects/proj", body={"options": {"requestedPolicyVersion": 3}}).execute()
    assert pol["etag"] and pol["bindings"][0]["role"] == "roles/owner"
    pol["bindings"].append({"role": "roles/viewer", "members": ["group:a@example.org"]})
    new = p.setIamPolicy(resource="projects/proj", body={"policy": pol}).execute()
    assert new["etag"] != pol["etag"]
    with pytest.raises(HttpError) as stale:  # reusing the old etag
        p.setIamPolicy(resource="projects/proj", body={"policy": pol}).execute()
    assert stale.value.resp.status == 409 and "concurrent policy changes" in str(stale.value)
    too_many = {"bindings": [{"role": "roles/viewer", "members": [f"user:u{i}@example.org" for i in range(1501)]}], "etag": new["etag"]}
    with pytest.raises(HttpError) as big:
        p.setIamPolicy(resource="projects/proj", body={"policy": too_many}).execute()
    assert big.value.resp.status == 400 and ("1,500" in str(big.value) or "1500" in str(big.value))
    # every occurrence counts: 751 principals in two bindings each are 1,502 (a set would see 751)
    twice = [f"user:t{i}@example.org" for i in range(751)]
    repeated = {"bindings": [{"role": "roles/viewer", "members": twice}, {"role": "roles/browser", "members": twice}], "etag": new["etag"]}
    with pytest.raises(HttpError) as rep:
        p.setIamPolicy(resource="projects/proj", body={"policy": repeated}).execute()
    assert rep.value.resp.status == 400 and "(1502)" in str(rep.value)
    domains = [f"domain:d{i}.example.org" for i in range(751)]
    doms = {"bindings": [{"role": "roles/viewer", "members": domains}, {"role": "roles/browser", "members": domains}], "etag": new["etag"]}
    with pytest.raises(HttpError) as dom:
        p.setIamPolicy(resource="projects/proj", body={"policy": doms}).execute()
    assert dom.value.resp.status == 400 and "(1502)" in str(dom.value)
    # the 250 of groups and domains: each domain at every occurrence, each distinct group once
    d126 = [f"domain:r{i}.example.org" for i in range(126)]
    redomains = {"bindings": [{"role": "roles/viewer", "members": d126}, {"role": "roles/browser", "members": d126}], "etag": new["etag"]}
    with pytest.raises(HttpError) as rd:
        p.setIamPolicy(resource="projects/proj", body={"policy": redomains}).execute()
    assert rd.value.resp.status == 400 and "groups and domains in the policy (252)" in str(rd.value)
    g126 = [f"group:r{i}@example.org" for i in range(126)]
    regroups = {"bindings": [{"role": "roles/viewer", "members": g126}, {"role": "roles/browser", "members": g126}], "etag": new["etag"]}
    new = p.setIamPolicy(resource="projects/proj", body={"policy": regroups}).execute()  # 126 groups, 252 principals: accepted
    assert sum(len(b["members"]) for b in new["bindings"]) == 252
    groups = {"bindings": [{"role": "roles/viewer", "members": [f"group:g{i}@example.org" for i in range(251)]}], "etag": new["etag"]}
    with pytest.raises(HttpError) as many_groups:
        p.setIamPolicy(resource="projects/proj", body={"policy": groups}).execute()
    assert many_groups.value.resp.status == 400 and "groups" in str(many_groups.value)
    cond = {"bindings": [{"role": "roles/viewer", "members": ["group:a@example.org"], "condition": {"expression": "true", "title": "t"}}],
            "etag": new["etag"], "version": 1}
    with pytest.raises(HttpError) as v1:
        p.setIamPolicy(resource="projects/proj", body={"policy": cond}).execute()
    assert v1.value.resp.status == 400 and "version 3" in str(v1.value)


def test_bigquery_dataset_access_with_if_match(emu: Emulator) -> None:
    d = build_service("bigquery", emulator=emu.url).resource.datasets()
    ds = d.get(projectId="proj", datasetId="mimic").execute()
    assert ds["access"] == [{"role": "OWNER", "userByEmail": "admin@example.org"}]  # legacy role names
    req = d.patch(projectId="proj", datasetId="mimic", body={"access": ds["access"] + [{"role": "roles/bigquery.dataViewer", "groupByEmail": G}]})
    req.headers["If-Match"] = ds["etag"]
    new = req.execute()
    assert {"role": "READER", "groupByEmail": G} in new["access"] and new["etag"] != ds["etag"]
    stale = d.patch(projectId="proj", datasetId="mimic", body={"access": []})
    stale.headers["If-Match"] = ds["etag"]
    with pytest.raises(HttpError) as err:
        stale.execute()
    assert err.value.resp.status == 412
    with pytest.raises(HttpError) as nf:
        d.get(projectId="proj", datasetId="nosuch").execute()
    assert _err(nf.value) == (404, "notFound")


# The shapes Google documents (literals, not the emulator's own table): the JSON error format of
# https://cloud.google.com/apis/design/errors (code, message, status) with the errors[] of
# https://developers.google.com/admin-sdk/directory/v1/limits (reason, domain usageLimits).
@pytest.mark.parametrize(
    "kind,status,reason,grpc_status",
    [("500", 500, "backendError", "INTERNAL"), ("503", 503, "backendError", "UNAVAILABLE"),
     ("429", 429, "rateLimitExceeded", "RESOURCE_EXHAUSTED"), ("rateLimitExceeded", 403, "rateLimitExceeded", "PERMISSION_DENIED"),
     ("userRateLimitExceeded", 403, "userRateLimitExceeded", "PERMISSION_DENIED"),
     ("quotaExceeded", 403, "quotaExceeded", "PERMISSION_DENIED")],
)
def test_faults_answer_like_google(emu: Emulator, kind: str, status: int, reason: str, grpc_status: str) -> None:
    m = build_service("directory", emulator=emu.url).resource.members()
    emu.add_fault(Fault(kind, match="directory.members.list", times=1))
    with pytest.raises(HttpError) as err:
        m.list(groupKey=G).execute()
    body = json.loads(err.value.content)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "errors", "status"}
    e = body["error"]
    assert (err.value.resp.status, e["code"], e["status"], e["errors"][0]["reason"]) == (status, status, grpc_status, reason)
    assert e["message"] and e["errors"][0]["message"] == e["message"]
    if status in (403, 429):
        assert e["errors"][0]["domain"] == "usageLimits"
    m.list(groupKey=G).execute()  # the fault fired once only


def test_fault_skip_latency_and_match_prefix(emu: Emulator) -> None:
    import time

    m = build_service("directory", emulator=emu.url).resource.members()
    emu.add_fault({"kind": "503", "match": "directory", "skip": 1, "times": 1})
    m.list(groupKey=G).execute()
    with pytest.raises(HttpError):
        m.list(groupKey=G).execute()
    emu.add_fault({"kind": "latency", "match": "directory.members.list", "seconds": 0.3})
    t0 = time.monotonic()
    m.list(groupKey=G).execute()
    assert time.monotonic() - t0 >= 0.3
    with pytest.raises(ValueError, match="unknown fault kind"):
        emu.add_fault({"kind": "teapot"})
    with pytest.raises(ValueError, match="needs target"):
        emu.add_fault({"kind": "concurrent_writer"})


def test_control_endpoint_over_http(emu: Emulator) -> None:
    def call(method: str, path: str, data=None):
        req = urllib.request.Request(emu.url + path, method=method, data=None if data is None else json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    assert call("POST", "/_emulator/faults", [{"kind": "429", "match": "crm"}, {"kind": "latency", "seconds": 0.01}]) == {"faults": 2}
    call("POST", "/_emulator/groups", {"group": "g2@example.org", "members": ["member1@example.org"]})
    state = call("GET", "/_emulator/state")
    assert state["groups"]["g2@example.org"] == 1 and len(state["faults"]) == 2
    assert "member1@example.org" not in json.dumps(state)  # counts only, no addresses
    call("DELETE", "/_emulator/faults")
    with pytest.raises(urllib.error.HTTPError) as bad:
        call("POST", "/_emulator/faults", {"kind": "nope"})
    assert bad.value.code == 400


def test_command_line_runs_and_stops() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cdsops.emulator", "--port", "0", "--group", G, "--fault", "503:directory:1",
                             "--dataset", "proj:mimic", "--bigquery-role", "roles/bigquery.dataViewer", "--stale-reads", "1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(proc.stdout.readline())["emulator"]
        m = build_service("directory", emulator=url).resource.members()
        with pytest.raises(HttpError):
            m.list(groupKey=G).execute()
        assert m.list(groupKey=G).execute()["kind"] == "admin#directory#members"
        d = build_service("bigquery", emulator=url).resource.datasets()
        assert d.get(projectId="proj", datasetId="mimic").execute()["access"] == []  # a viewer may read
        with pytest.raises(HttpError) as denied:
            d.patch(projectId="proj", datasetId="mimic", body={"access": []}).execute()
        assert denied.value.resp.status == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


COND = {"title": "until-2030", "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}


def test_dataset_access_needs_access_policy_version_3_with_conditional_entries(emu: Emulator) -> None:
    emu.create_dataset("proj", "cond", [{"role": "OWNER", "userByEmail": "admin@example.org"},
                                        {"role": "roles/bigquery.dataViewer", "groupByEmail": "tmp@example.org", "condition": COND}])
    d = build_service("bigquery", emulator=emu.url).resource.datasets()
    old = d.get(projectId="proj", datasetId="cond").execute()  # below version 3: altered role names
    assert old["access"][1]["role"].startswith("roles/bigquery.dataViewer_with_conditionalbinding_")
    assert "condition" not in old["access"][1]
    v3 = d.get(projectId="proj", datasetId="cond", accessPolicyVersion=3).execute()
    assert v3["access"][1] == {"role": "roles/bigquery.dataViewer", "groupByEmail": "tmp@example.org", "condition": COND}
    body = {"access": v3["access"] + [{"role": "READER", "groupByEmail": G}]}
    with pytest.raises(HttpError) as refused:
        d.patch(projectId="proj", datasetId="cond", body=body).execute()
    assert refused.value.resp.status == 400
    done = d.patch(projectId="proj", datasetId="cond", body=body, accessPolicyVersion=3).execute()
    assert {"role": "READER", "groupByEmail": G} in done["access"] and done["access"][1]["condition"] == COND
    with pytest.raises(HttpError) as bad:
        d.get(projectId="proj", datasetId="cond", accessPolicyVersion=2).execute()
    assert bad.value.resp.status == 400


@pytest.mark.parametrize(
    "roles,get_ok,patch_ok",
    [(("roles/bigquery.dataOwner",), True, True), (("roles/bigquery.dataEditor",), True, False),
     (("roles/bigquery.metadataViewer",), False, False)],
)
def test_dataset_access_checks_the_callers_permissions(roles: tuple[str, ...], get_ok: bool, patch_ok: bool) -> None:
    with Emulator(bigquery_roles=roles) as e:
        e.create_dataset("proj", "mimic", [{"role": "OWNER", "userByEmail": "admin@example.org"}])
        d = build_service("bigquery", emulator=e.url).resource.datasets()
        if not get_ok:
            with pytest.raises(HttpError) as denied:
                d.get(projectId="proj", datasetId="mimic").execute()
            assert _err(denied.value) == (403, "accessDenied") and "bigquery.datasets.getIamPolicy" in str(denied.value)
            return
        ds = d.get(projectId="proj", datasetId="mimic").execute()
        req = d.patch(projectId="proj", datasetId="mimic", body={"access": ds["access"] + [{"role": "READER", "groupByEmail": G}]})
        if patch_ok:
            assert len(req.execute()["access"]) == 2
        else:
            with pytest.raises(HttpError) as denied:
                req.execute()
            assert _err(denied.value) == (403, "accessDenied") and "bigquery.datasets.update" in str(denied.value)


def test_reads_right_after_a_write_can_be_stale() -> None:
    with Emulator(stale_reads=2) as e:
        e.create_project("proj", [{"role": "roles/owner", "members": ["user:admin@example.org"]}])
        p = build_service("crm", emulator=e.url).resource.projects()
        pol = p.getIamPolicy(resource="projects/proj", body={}).execute()
        pol["bindings"].append({"role": "roles/viewer", "members": ["group:a@example.org"]})
        p.setIamPolicy(resource="projects/proj", body={"policy": pol}).execute()
        reads = [p.getIamPolicy(resource="projects/proj", body={}).execute() for _ in range(3)]
        assert [len(r["bindings"]) for r in reads] == [1, 1, 2]  # two stale reads, then the write shows


def test_set_iam_policy_keeps_audit_configs_unless_the_update_mask_names_them(emu: Emulator) -> None:
    audit = [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    emu.state.policies["proj"]["auditConfigs"] = audit
    p = build_service("crm", emulator=emu.url).resource.projects()
    pol = p.getIamPolicy(resource="projects/proj", body={}).execute()
    sent = {"bindings": pol["bindings"] + [{"role": "roles/viewer", "members": ["group:a@example.org"]}], "etag": pol["etag"]}
    kept = p.setIamPolicy(resource="projects/proj", body={"policy": sent}).execute()  # default mask: bindings, etag
    assert kept["auditConfigs"] == audit and len(kept["bindings"]) == 2
    cleared = p.setIamPolicy(resource="projects/proj", body={"policy": {"bindings": kept["bindings"], "etag": kept["etag"]},
                                                            "updateMask": "bindings,etag,auditConfigs"}).execute()
    assert "auditConfigs" not in cleared
