"""`runcast approvals / approve / reject / watch` against a real `runcast serve` (and, for watch, a hub restart on Redis)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubtest import ALICE, BOB, OPERATOR, ROOT, VIEWER, Cluster, on_redis, seqs


def cli_env(c: Cluster, tok: str | None) -> dict[str, str]:
    env = {"RUNCAST_URL": c.url, "PYTHONPATH": str(ROOT / "server"), "PATH": "/usr/bin:/bin", "NO_PROXY": "127.0.0.1"}
    if tok:
        env["RUNCAST_TOKEN"] = tok
    return env


def cli(c: Cluster, tok: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runcast.cli", *args], env=cli_env(c, tok), capture_output=True,
                          text=True, timeout=60)


def watch(c: Cluster, tok: str, run_id: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "runcast.cli", "watch", run_id, *extra], env=cli_env(c, tok),
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT)


def wait_text(path: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = path.read_text(errors="replace") if path.exists() else ""
        if text in got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in:\n{got}")


@pytest.fixture(scope="module")
def hub1(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    c = Cluster(tmp_path_factory.mktemp("terminal"), "memory")
    c.nodes[0].start(wait=False)
    c.nodes[0].wait_ready(timeout=120)
    yield c
    c.stop()


def test_approvals_approve_reject_in_a_terminal(hub1: Cluster, tmp_path: Path) -> None:
    c = hub1
    quorum = c.start_run("demo-quorum", "ship it")
    tidy = c.start_run("demo", "tidy up")
    strict = c.start_run("demo-strict", "tidy up", tok=OPERATOR)
    q_ap = c.wait_status(quorum, "paused")["pending_approvals"][0]["approval_id"]
    t_ap = c.wait_status(tidy, "paused")["pending_approvals"][0]["approval_id"]
    c.wait_status(strict, "paused")

    listed = cli(c, ALICE, "approvals")
    assert listed.returncode == 0, listed.stderr
    assert f"{quorum} {q_ap}  deploy(" in listed.stdout and f"{tidy} {t_ap}  delete_files(" in listed.stdout
    assert f"runcast approve {tidy} {t_ap}" in listed.stdout
    as_json = json.loads(cli(c, ALICE, "approvals", "--json").stdout)
    assert {(a["run_id"], a["approval_id"]) for a in as_json} >= {(quorum, q_ap), (tidy, t_ap)}
    assert cli(c, VIEWER, "approvals").stdout.strip() == "No open approvals you may decide."
    # Ada (operator) started demo-strict and may not approve her own run's call: not listed for her even as admin-less
    assert strict not in cli(c, OPERATOR, "approvals").stdout

    # a quorum of two from the terminal
    one = cli(c, ALICE, "approve", quorum, q_ap, "--reason", "notes checked")
    assert one.returncode == 0 and "counted" in one.stdout, one.stderr
    assert q_ap not in cli(c, ALICE, "approvals").stdout and q_ap in cli(c, BOB, "approvals").stdout  # she voted
    again = cli(c, ALICE, "approve", quorum, q_ap)
    assert again.returncode == 1 and "already voted" in again.stderr
    two = cli(c, BOB, "approve", quorum, q_ap)
    assert two.returncode == 0 and "settled" in two.stdout
    c.wait_status(quorum, "completed")

    # reject needs a reason; a viewer may not decide; a decided approval names who decided it
    assert cli(c, ALICE, "reject", tidy, t_ap).returncode == 2
    no = cli(c, VIEWER, "approve", tidy, t_ap)
    assert no.returncode == 1 and "not allowed" in no.stderr and "approver" in no.stderr
    rej = cli(c, BOB, "reject", tidy, t_ap, "--reason", "keep them")
    assert rej.returncode == 0 and "rejected" in rej.stdout
    late = cli(c, ALICE, "approve", tidy, t_ap)
    assert late.returncode == 1 and "already rejected by Bob" in late.stderr, late.stderr
    assert cli(c, ALICE, "approve", "run_nope", "ap_x").returncode == 1
    # no token, a bad token, no hub
    assert cli(c, None, "approvals").returncode == 2
    bad = cli(c, "not-a-token", "approvals")
    assert bad.returncode == 1 and "did not accept your token" in bad.stderr
    gone = subprocess.run([sys.executable, "-m", "runcast.cli", "approvals", "--url", "http://127.0.0.1:9", "--token", ALICE],
                          env=cli_env(c, None), capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "cannot reach the hub" in gone.stderr


def test_watch_prints_the_run_and_exits_with_how_it_ended(hub1: Cluster, tmp_path: Path) -> None:
    c = hub1
    run_id = c.start_run("demo", "tidy up")
    out = tmp_path / "watch.txt"
    w = watch(c, VIEWER, run_id, out)
    text = wait_text(out, "runcast approve")
    assert "→ list_files(" in text and "⏸ approval ap_" in text
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    assert cli(c, ALICE, "approve", run_id, ap, "--reason", "fine").returncode == 0
    assert w.wait(30) == 0
    text = out.read_text()
    log = c.log_events(run_id)
    for m in (e["data"]["text"] for e in log if e["type"] == "message.completed"):
        assert m in text  # the streamed text, whole
    assert f"✔ {ap} approved by Alice: fine" in text and "← deleted 3 files" in text and text.rstrip().endswith("■ completed")

    # cancelled: exit 4; failed: exit 3; watching a finished run replays it and exits at once
    x = c.start_run("demo", "tidy up")
    c.wait_status(x, "paused")
    w = watch(c, VIEWER, x, tmp_path / "x.txt")
    wait_text(tmp_path / "x.txt", "⏸ paused")
    c.http("POST", f"/api/runs/{x}/cancel", OPERATOR, json={})
    assert w.wait(30) == 4 and "■ cancelled by Ada" in (tmp_path / "x.txt").read_text()
    f = c.start_run("broken", "hi")
    assert watch(c, VIEWER, f, tmp_path / "f.txt").wait(30) == 3 and "■ failed" in (tmp_path / "f.txt").read_text()
    assert watch(c, VIEWER, run_id, tmp_path / "again.txt").wait(30) == 0
    assert cli(c, VIEWER, "watch", "run_nope").returncode == 1


def test_watch_survives_a_hub_restart_on_redis_without_loss_or_repeat(tmp_path: Path) -> None:
    with on_redis(tmp_path, persist=True, start=False, nodes=1, workers=1, env={"RUNCAST_DEMO_DELAY": "0.03"}) as c:
        for proc in c.workers + c.nodes:
            proc.start(wait=False)
        c.nodes[0].wait_ready(timeout=120)  # (processes importing the SDK on two busy cores)
        run_id = c.start_run("long-turn", "explain")
        out = tmp_path / "watch.jsonl"
        w = watch(c, VIEWER, run_id, out, "--json")
        wait_text(out, '"message.delta"')
        c.nodes[0].kill()  # the hub dies mid-stream; the worker goes on writing to Redis
        time.sleep(0.5)
        c.nodes[0].start(wait=False)  # the same port again
        c.nodes[0].wait_ready(timeout=120)
        ap = c.wait_status(run_id, "paused", timeout=30)["pending_approvals"][0]["approval_id"]
        assert cli(c, ALICE, "approve", run_id, ap).returncode == 0
        assert w.wait(60) == 0, out.read_text()[-2000:]
        lines = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
        assert lines[-1]["type"] == "run.completed"
        log = c.log_events(run_id)[: len(lines)]  # (presence events may follow the end)
        assert seqs(lines) == list(range(1, lines[-1]["seq"] + 1))  # each event once, none missing
        assert lines == log
        assert "reconnect" in out.read_text() or any("connection lost" in x for x in out.read_text().splitlines())


def test_comment_and_inbox_in_a_terminal(hub1: Cluster, tmp_path: Path) -> None:
    c = hub1
    run_id = c.start_run("demo", "tidy up")
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    out = tmp_path / "watch.txt"
    w = watch(c, VIEWER, run_id, out)
    try:
        wait_text(out, "⏸ approval")
        r = cli(c, VIEWER, "comment", run_id, "is build-cache.tar still used? @ada", "--approval", ap)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("commented: c_") and f"in thread {ap}" in r.stdout
        cid = r.stdout.split()[1]
        bad = cli(c, VIEWER, "comment", run_id, "hi @nobody")
        assert bad.returncode != 0 and "bad_request" in bad.stderr and "@nobody" in bad.stderr
        got = wait_text(out, "💬 Vic")
        assert f"💬 Vic on {ap} [{cid}]: is build-cache.tar still used? @ada" in got
        # Ada (who started the run, so may be mentioned) finds it in her inbox
        inbox = cli(c, OPERATOR, "inbox")
        assert inbox.returncode == 0, inbox.stderr
        assert f"mentions you: Vic on {run_id} approval {ap}" in inbox.stdout and "is build-cache.tar still used?" in inbox.stdout
        as_json = json.loads(cli(c, OPERATOR, "inbox", "--json").stdout)
        assert [m["comment_id"] for m in as_json["mentions"] if m["run_id"] == run_id] == [cid]
        alice = cli(c, ALICE, "inbox")
        assert f"needs your decision: {run_id} {ap}" in alice.stdout and "mentions you" not in alice.stdout
    finally:
        c.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={})
        w.wait(timeout=60)
