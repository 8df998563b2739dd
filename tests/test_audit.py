"""The audit export: GET /api/runs/{id}/audit (JSON and CSV) and `runcast audit`, against both backends."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from datetime import datetime, timezone

import httpx
from typing import Any

from hubtest import ADMIN, ALICE, BOB, OPERATOR, ROOT, VIEWER, Cluster, token

from runcast import audit
from runcast.approvals import Approval, ApprovalPolicy, Person, vote
from runcast.runs import RunRecord


def decide(c: Cluster, run_id: str, ap: str, tok: str, decision: str, reason: str | None = None) -> dict[str, Any]:
    r = c.http("POST", f"/api/runs/{run_id}/approvals/{ap}", tok, json={"decision": decision, "reason": reason})
    assert r.status_code == 200, r.text
    return r.json()


def get_audit(c: Cluster, run_id: str, tok: str = VIEWER) -> dict[str, Any]:
    r = c.http("GET", f"/api/runs/{run_id}/audit", tok)
    assert r.status_code == 200, r.text
    return r.json()


def csv_rows(c: Cluster, run_id: str, headers: dict[str, str] | None = None, **kw: Any) -> list[dict[str, str]]:
    r = httpx.get(
        f"{c.url}/api/runs/{run_id}/audit",
        headers={"Authorization": f"Bearer {VIEWER}", **(headers or {})},
        timeout=10,
        **kw,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def sha(value: Any) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def test_quorum_rejection_expiry_and_cancel_are_all_in_the_audit(hub: Cluster) -> None:
    # quorum: two approvers, each with a reason
    q = hub.start_run("demo-quorum", "ship it")
    ap = hub.wait_status(q, "paused")["pending_approvals"][0]["approval_id"]
    assert decide(hub, q, ap, ALICE, "approve", "release notes checked")["outcome"] == "voted"
    assert decide(hub, q, ap, BOB, "approve", "canary is green")["outcome"] == "decided"
    hub.wait_status(q, "completed")
    doc = get_audit(hub, q)
    assert doc["run"] | {} == doc["run"] and doc["run"]["started_by"] == {"sub": "ada", "name": "Ada"}
    assert doc["run"]["input"] == "ship it" and doc["run"]["status"] == "completed" and doc["log_complete"]
    (a,) = doc["approvals"]
    assert (a["tool"], a["outcome"], a["how"]) == ("deploy", "approved", "decided")
    assert a["policy"]["roles"] == ["approver"] and a["policy"]["quorum"] == 2
    assert [(v["sub"], v["name"], v["roles"], v["decision"], v["reason"]) for v in a["votes"]] == [
        ("alice", "Alice", ["approver"], "approve", "release notes checked"),
        ("bob", "Bob", ["approver"], "approve", "canary is green"),
    ]
    assert all(v["at"] for v in a["votes"]) and a["settled_by"] == {"sub": "bob", "name": "Bob"}
    (ran,) = hub.tool_calls(q, "deploy")  # what the tool itself received
    assert a["arguments_sha256"] == sha(ran["args"]) and a["arguments_canonical"]
    assert a["arguments_parsed"] == ran["args"]
    assert a["tool_execution"]["ran"] and a["tool_execution"]["output"] == "deployed 2.4.1 to production"
    assert a["tool_execution"]["at"] >= a["settled_at"]

    # rejection: the tool never runs
    r = hub.start_run("demo", "tidy up")
    ap = hub.wait_status(r, "paused")["pending_approvals"][0]["approval_id"]
    decide(hub, r, ap, ALICE, "reject", "keep the logs for the incident review")
    hub.wait_status(r, "completed")
    (a,) = get_audit(hub, r)["approvals"]
    assert (a["outcome"], a["how"], a["reason"]) == ("rejected", "decided", "keep the logs for the incident review")
    assert [(v["sub"], v["decision"]) for v in a["votes"]] == [("alice", "reject")]
    assert a["tool_execution"]["ran"] is False and hub.tool_calls(r, "delete_files") == []
    assert "rejected" in a["tool_execution"]["why_not"]

    # expiry: nobody votes; rejected by policy
    e = hub.start_run("demo-expiring", "tidy up")
    hub.wait_status(e, "completed", timeout=30)
    (a,) = get_audit(hub, e)["approvals"]
    assert (a["outcome"], a["how"], a["votes"]) == ("rejected", "expired", [])
    assert a["settled_by"] == {"policy": "expired"} and a["policy"]["expires_s"] == 1.0
    assert a["tool_execution"]["ran"] is False

    # cancel: one vote of two counted, then the run is cancelled
    x = hub.start_run("demo-quorum", "ship it")
    ap = hub.wait_status(x, "paused")["pending_approvals"][0]["approval_id"]
    decide(hub, x, ap, ALICE, "approve", "fine by me")
    assert hub.http("POST", f"/api/runs/{x}/cancel", OPERATOR, json={}).status_code == 200
    hub.wait_status(x, "cancelled")
    doc = get_audit(hub, x)
    (a,) = doc["approvals"]
    assert (a["outcome"], a["how"]) == ("cancelled", "cancelled") and a["settled_at"]
    assert [(v["sub"], v["reason"]) for v in a["votes"]] == [("alice", "fine by me")]
    assert a["tool_execution"] == {"ran": False, "why_not": "the run was cancelled"}
    assert doc["run"]["cancelled_by"] == {"sub": "ada", "name": "Ada"}
    assert hub.tool_calls(x, "deploy") == []

    # CSV, by Accept and by ?format: one row per vote, and one for an approval nobody voted on
    for kw in ({"headers": {"Accept": "text/csv"}}, {"params": {"format": "csv"}}):
        rows = csv_rows(hub, q, **kw)
        assert [(x_["vote_sub"], x_["vote_roles"], x_["vote_reason"], x_["outcome"]) for x_ in rows] == [
            ("alice", "approver", "release notes checked", "approved"),
            ("bob", "approver", "canary is green", "approved"),
        ]
        assert {x_["arguments_sha256"] for x_ in rows} == {sha(ran["args"])} and rows[0]["tool_ran"] == "true"
    (row,) = csv_rows(hub, e, params={"format": "csv"})
    assert (row["vote_sub"], row["outcome"], row["how"], row["settled_by"]) == ("", "rejected", "expired", "expired")
    (row,) = csv_rows(hub, x, params={"format": "csv"})
    assert (row["vote_sub"], row["vote_decision"], row["outcome"]) == ("alice", "approve", "cancelled")
    assert list(row) == audit.CSV_COLUMNS

    # who may read it: anyone who may see the run, nobody else
    only_other = token("kim", ["viewer"], runs=["run_other"])
    # one answer for "not yours" and "no such run", so nobody learns which run ids exist
    hidden, missing = (
        hub.http("GET", f"/api/runs/{q}/audit", only_other),
        hub.http("GET", "/api/runs/run_nope/audit", ADMIN),
    )
    assert (
        (hidden.status_code, hidden.json()["error"]["code"])
        == (missing.status_code, missing.json()["error"]["code"])
        == (404, "not_found")
    )
    assert hidden.json()["error"]["message"].replace(q, "ID") == missing.json()["error"]["message"].replace(
        "run_nope", "ID"
    )
    assert hub.http("GET", f"/api/runs/{q}/audit?format=xml", ADMIN).json()["error"]["code"] == "bad_request"

    # `runcast audit RUN [--csv]`
    env = {"RUNCAST_URL": hub.url, "RUNCAST_TOKEN": VIEWER, "PYTHONPATH": str(ROOT / "server"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "audit", q], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["approvals"][0]["votes"][1]["sub"] == "bob"
    out = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "audit", x, "--csv"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and list(csv.DictReader(io.StringIO(out.stdout)))[0]["outcome"] == "cancelled"
    out = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "audit", "run_nope"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1 and "not found" in out.stderr


def test_the_digest_is_over_the_canonical_encoding() -> None:
    pol = ApprovalPolicy(roles=["finance"], quorum=2)
    ap = Approval(
        approval_id="ap_1",
        call_id="c1",
        tool="refund",
        arguments='{ "cents":  1200, "order_id" : "A-7", "note": "é"}',
        agent="Support",
        policy=pol,
        requested_at="2026-01-01T00:00:00.000Z",
    )
    vote(ap, Person(sub="fin", name="Fin", roles=["finance", "viewer"]), "approve", "ok", False, 0.0, "ada")
    rec = RunRecord(
        run_id="run_1",
        agent="support",
        input="refund A-7",
        started_by={"sub": "ada", "name": "Ada"},
        created_at="2026-01-01T00:00:00.000Z",
        status="paused",
        approvals={"ap_1": ap},
    )
    doc = audit.build(rec, [])
    (a,) = doc["approvals"]
    want = hashlib.sha256('{"cents":1200,"note":"é","order_id":"A-7"}'.encode()).hexdigest()
    assert a["arguments_sha256"] == want == audit.arguments_digest({"order_id": "A-7", "note": "é", "cents": 1200})[0]
    assert a["votes"][0]["roles"] == ["finance", "viewer"] and a["outcome"] == "pending" and a["how"] == "open"
    assert audit.arguments_digest("not json") == (hashlib.sha256(b"not json").hexdigest(), False)
    assert len(list(csv.DictReader(io.StringIO(audit.to_csv(doc))))) == 1


def test_csv_cells_a_spreadsheet_would_run_are_quoted() -> None:
    """OWASP's CSV injection: a cell starting with =, +, -, @, tab or CR is prefixed with ' so a spreadsheet shows it
    as text; other cells, and the JSON, are unchanged."""
    hostile = {
        "input": '=HYPERLINK("http://evil.invalid","open")',
        "name": "@SUM(1+1)*cmd|' /C calc'!A0",
        "reason": "+cmd|' /C calc'!A0",
        "output": "-2+3",
        "tool": "\tdeploy",
        "sub": "\r=1+1",
    }
    doc = {
        "run": {
            "run_id": "run_1",
            "agent": "A",
            "started_by": {"sub": hostile["sub"], "name": hostile["name"]},
            "input": hostile["input"],
            "status": "completed",
        },
        "approvals": [
            {
                "approval_id": "ap_1",
                "call_id": "c1",
                "tool": hostile["tool"],
                "arguments": "{}",
                "arguments_sha256": "x",
                "policy": {"roles": ["approver"], "quorum": 1, "allow_self": True},
                "requested_at": "2026-01-01T00:00:00.000Z",
                "expires_at": None,
                "outcome": "approved",
                "how": "votes",
                "settled_at": "2026-01-01T00:00:01.000Z",
                "settled_by": {"sub": "alice"},
                "tool_execution": {"ran": True, "at": "2026-01-01T00:00:02.000Z", "output": hostile["output"]},
                "votes": [
                    {
                        "sub": "alice",
                        "name": hostile["name"],
                        "roles": ["approver"],
                        "decision": "approve",
                        "reason": hostile["reason"],
                        "at": "2026-01-01T00:00:01.000Z",
                    }
                ],
            }
        ],
    }
    (row,) = list(csv.DictReader(io.StringIO(audit.to_csv(doc))))
    got = {
        k: row[k]
        for k in ("input", "started_by_name", "vote_name", "vote_reason", "tool_output", "tool", "started_by_sub")
    }
    assert got == {
        "input": "'" + hostile["input"],
        "started_by_name": "'" + hostile["name"],
        "vote_name": "'" + hostile["name"],
        "vote_reason": "'" + hostile["reason"],
        "tool_output": "'" + hostile["output"],
        "tool": "'" + hostile["tool"],
        "started_by_sub": "'" + hostile["sub"],
    }
    assert (row["run_id"], row["tool_ran"], row["policy_quorum"], row["vote_at"]) == (
        "run_1",
        "true",
        "1",
        "2026-01-01T00:00:01.000Z",
    )
    assert not [c for c in row.values() if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


def audit_page(c: Cluster, tok: str = ADMIN, **params: Any) -> dict[str, Any]:
    r = c.http("GET", "/api/audit", tok, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_record_across_runs_filters_pages_and_reads_on_both_backends(hub: Cluster) -> None:
    """GET /api/audit: one entry per settled approval across runs, newest first, by person, agent, tool, outcome and
    time, paged with an opaque cursor, as JSON or CSV; nonsense filters get bad_request with their field."""
    since = datetime.now(timezone.utc).isoformat()
    r1 = hub.start_run("demo", "tidy up")
    ap1 = hub.wait_status(r1, "paused")["pending_approvals"][0]["approval_id"]
    decide(hub, r1, ap1, ALICE, "approve", "old logs")
    hub.wait_status(r1, "completed")
    r2 = hub.start_run("demo", "tidy up")
    ap2 = hub.wait_status(r2, "paused")["pending_approvals"][0]["approval_id"]
    decide(hub, r2, ap2, BOB, "reject", "keep them")
    hub.wait_status(r2, "completed")
    r3 = hub.start_run("demo-quorum", "ship it")
    ap3 = hub.wait_status(r3, "paused")["pending_approvals"][0]["approval_id"]
    decide(hub, r3, ap3, ALICE, "approve")
    decide(hub, r3, ap3, BOB, "approve", "canary green")
    hub.wait_status(r3, "completed")
    r4 = hub.start_run("demo-expiring", "tidy up")
    hub.wait_status(r4, "completed", timeout=30)
    r5 = hub.start_run("demo-quorum", "ship it")
    ap5 = hub.wait_status(r5, "paused")["pending_approvals"][0]["approval_id"]
    decide(hub, r5, ap5, ALICE, "approve")
    assert hub.http("POST", f"/api/runs/{r5}/cancel", OPERATOR, json={}).status_code == 200
    hub.wait_status(r5, "cancelled")
    ours = {r1, r2, r3, r4, r5}

    def got(tok: str = ADMIN, **params: Any) -> list[tuple[str, str]]:
        return [
            (e["run_id"], e["outcome"])
            for e in audit_page(hub, tok, since=since, **params)["entries"]
            if e["run_id"] in ours
        ]

    everything = audit_page(hub, since=since)
    assert everything["next"] is None
    assert got() == [(r5, "cancelled"), (r4, "expired"), (r3, "approved"), (r2, "rejected"), (r1, "approved")]
    e3 = next(e for e in everything["entries"] if e["run_id"] == r3)
    assert (e3["agent"], e3["tool"], e3["approval_id"], e3["settled_by"]) == (
        "demo-quorum",
        "deploy",
        ap3,
        {"sub": "bob", "name": "Bob"},
    )
    assert [(v["sub"], v["decision"]) for v in e3["votes"]] == [("alice", "approve"), ("bob", "approve")]
    assert e3["reason"] == "canary green" and e3["started_by"] == {"sub": "ada", "name": "Ada"}
    assert (
        e3["link"] == f"/#run={r3}&approval={ap3}"
        and e3["arguments_sha256"] == get_audit(hub, r3)["approvals"][0]["arguments_sha256"]
    )
    # who started, voted or decided
    assert got(person="alice") == [(r5, "cancelled"), (r3, "approved"), (r1, "approved")]
    assert got(person="bob") == [(r3, "approved"), (r2, "rejected")]
    assert got(person="ada") == got()  # she started them all
    assert got(person="nobody") == []
    assert got(agent="demo") == [(r2, "rejected"), (r1, "approved")]
    assert got(tool="deploy", outcome="approved") == [(r3, "approved")]
    assert got(person="alice", outcome="cancelled") == [(r5, "cancelled")]
    assert got(outcome="expired") == [(r4, "expired")]
    assert got(until=since) == [] and audit_page(hub, since="2999-01-01", until="2001-01-01")["entries"] == []
    # paging: limit 1, following `next`, gives the same sequence
    pages, cursor = [], None
    while True:
        page = audit_page(hub, since=since, person="alice", limit=1, **({"cursor": cursor} if cursor else {}))
        pages += [(e["run_id"], e["outcome"]) for e in page["entries"]]
        cursor = page["next"]
        if cursor is None:
            break
        assert len(page["entries"]) == 1
    assert pages == got(person="alice")
    # CSV
    r = httpx.get(
        f"{hub.url}/api/audit",
        headers={"Authorization": f"Bearer {ADMIN}"},
        params={"since": since, "person": "bob", "format": "csv"},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = [x for x in csv.DictReader(io.StringIO(r.text)) if x["run_id"] in ours]
    assert [(x["run_id"], x["outcome"], x["decided_by_sub"], x["voters"]) for x in rows] == [
        (r3, "approved", "bob", "alice:approve bob:approve"),
        (r2, "rejected", "bob", "bob:reject"),
    ]
    assert list(rows[0]) == audit.ENTRY_COLUMNS and rows[1]["link"] == f"/#run={r2}&approval={ap2}"
    # who may read it: admin and auditor everything, approvers the runs they may see, viewers not at all
    auditor = token("aud", ["auditor"])
    assert got(auditor) == got()
    # an auditor follows an entry's link to its run (reads it), and decides nothing there
    opened = hub.http("GET", f"/api/runs/{r2}", auditor)
    assert opened.status_code == 200 and opened.json()["run_id"] == r2
    assert hub.http("GET", f"/api/runs/{r2}/events", auditor).status_code == 200
    assert got(token("amy", ["approver"], runs=[r1, r3])) == [(r3, "approved"), (r1, "approved")]
    denied = hub.http("GET", "/api/audit", VIEWER)
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "forbidden")
    # nonsense filters: bad_request naming the field, nothing else
    for params, field in [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"format": "xml"}, "format"),
        ({"person": "x" * 500}, "person"),
        ({"until": ""}, "until"),
        ({"outcome": ""}, "outcome"),
        ({"cursor": ""}, "cursor"),
        ({"format": ""}, "format"),
    ]:
        bad = hub.http("GET", "/api/audit", ADMIN, params=params)
        assert (bad.status_code, bad.json()["error"]["code"], bad.json()["error"].get("field")) == (
            400,
            "bad_request",
            field,
        ), params
