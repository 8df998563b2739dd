"""`runcast say / withdraw / rerun` (terminal_talk.py) against a real `runcast serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubtest import ALICE, OPERATOR, VIEWER, Cluster
from test_terminal import cli


@pytest.fixture(scope="module")
def hub1(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    c = Cluster(tmp_path_factory.mktemp("terminal-talk"), "memory")
    c.nodes[0].start(wait=False)
    c.nodes[0].wait_ready(timeout=120)
    yield c
    c.stop()


def test_say_withdraw_rerun_in_a_terminal(hub1: Cluster, tmp_path: Path) -> None:
    c = hub1
    run_id = c.start_run("demo", "tidy up")
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    queued = cli(c, OPERATOR, "say", run_id, "keep the zip")
    assert queued.returncode == 0, queued.stderr
    mid = queued.stdout.split()[1].rstrip(":")
    assert (
        queued.stdout.startswith(f"queued {mid}: the agent is busy")
        and f"runcast withdraw {run_id} {mid}" in queued.stdout
    )
    viewer = cli(c, VIEWER, "withdraw", run_id, mid)
    assert viewer.returncode == 1 and "not allowed: only the person who sent a message may withdraw it" in viewer.stderr
    gone = cli(c, OPERATOR, "withdraw", run_id, mid)
    assert gone.returncode == 0 and gone.stdout == f"withdrew {mid}\n"
    assert cli(c, ALICE, "approve", run_id, ap).returncode == 0
    c.wait_status(run_id, "completed")
    talk = cli(c, OPERATOR, "say", run_id, "anything else?", "--watch")
    assert talk.returncode == 0, talk.stderr
    lines = talk.stdout.splitlines()
    assert lines[0].startswith("said msg_") and lines[0].endswith("the agent is answering")
    assert lines[1].startswith("💬 Ada: anything else?  [msg_")
    assert "▶ turn 2: the agent answers 1 message(s)" in lines
    assert (
        'Ada, you said: "anything else?". So far I have heard from: Ada.' in talk.stdout and lines[-1] == "■ completed"
    )
    refused = cli(c, VIEWER, "say", run_id, "hi")
    assert refused.returncode == 1 and refused.stderr.startswith(
        "runcast say: not allowed: talking to this agent needs"
    )
    again = cli(c, OPERATOR, "rerun", run_id)
    assert again.returncode == 0 and again.stdout.startswith("run_")
    new = c.http("GET", f"/api/runs/{again.stdout.strip()}").json()
    assert (new["agent"], new["input"], new["started_by"]["sub"]) == ("demo", "tidy up", "ada")
    busy = cli(c, OPERATOR, "rerun", new["run_id"])
    assert busy.returncode == 1 and "only a finished run can be run again" in busy.stderr


def test_approve_with_set_runs_the_edited_call(hub1: Cluster) -> None:
    c = hub1
    run_id = c.start_run("demo", "tidy up")
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    bad = cli(c, ALICE, "approve", run_id, ap, "--set", "paths=scratch/x")
    assert (
        bad.returncode == 1
        and "invalid_arguments: the edited arguments do not fit the tool's schema at paths" in bad.stderr
    )
    ok = cli(c, ALICE, "approve", run_id, ap, "--set", 'paths=["scratch/old-logs.zip"]')
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout
        == f'✓ approved with changes: {ap} runs with {{"paths": ["scratch/old-logs.zip"]}}; the run goes on.\n'
    )
    c.wait_status(run_id, "completed")
    assert [x["args"] for x in c.tool_calls(run_id, "delete_files")] == [{"paths": ["scratch/old-logs.zip"]}]
