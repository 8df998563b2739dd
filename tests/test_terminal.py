"""The terminal commands (`runcast runs / start / watch / approvals / approve / reject / audit`) against a real
`runcast serve`: through a pipe for plain output, in a pseudo-terminal (pexpect) for the picker and the colour, and, for
watch, across a hub restart on Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from hubtest import (
    ADMIN,
    ALICE,
    BOB,
    OPERATOR,
    ROOT,
    VIEWER,
    Client,
    Cluster,
    Process,
    base_env,
    free_port,
    on_redis,
    seqs,
    token,
)


def cli_env(c: Cluster, tok: str | None) -> dict[str, str]:
    env = {
        "RUNCAST_URL": c.url,
        "PYTHONPATH": str(ROOT / "server"),
        "PATH": "/usr/bin:/bin",
        "NO_PROXY": "127.0.0.1",
        "XDG_CONFIG_HOME": str(c.tmp / "config"),
    }  # never a sign-in `runcast login` saved on this machine
    if tok:
        env["RUNCAST_TOKEN"] = tok
    return env


def cli(c: Cluster, tok: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runcast.cli", *args], env=cli_env(c, tok), capture_output=True, text=True, timeout=60
    )


def watch(c: Cluster, tok: str, run_id: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runcast.cli", "watch", run_id, *extra],
        env=cli_env(c, tok),
        stdout=open(out, "wb"),
        stderr=subprocess.STDOUT,
    )


def interruptible() -> None:
    """In a pexpect child, before it runs: Ctrl-C interrupts, as in a person's terminal. A suite started as a
    background job of a non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored, and so would the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    c = Cluster(tmp_path_factory.mktemp("terminal"), "memory", serve_args=["--agents", "agents_terminal"])
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

    # a viewer may not decide; reject needs no reason (as on the page); a decided approval names who decided it
    no = cli(c, VIEWER, "approve", tidy, t_ap)
    assert no.returncode == 1 and "not allowed" in no.stderr and "approver" in no.stderr
    rej = cli(c, BOB, "reject", tidy, t_ap)
    assert rej.returncode == 0 and "rejected" in rej.stdout, rej.stderr
    late = cli(c, ALICE, "approve", tidy, t_ap)
    assert late.returncode == 1 and "already rejected by Bob" in late.stderr, late.stderr
    decided = [e["data"] for e in c.log_events(tidy) if e["type"] == "approval.decided"]
    assert decided[0]["decision"] == "reject" and not decided[0].get("reason")
    assert cli(c, ALICE, "approve", "run_nope", "ap_x").returncode == 1
    # no token, a bad token, no hub
    assert cli(c, None, "approvals").returncode == 2
    bad = cli(c, "not-a-token", "approvals")
    assert bad.returncode == 1 and "did not accept your token" in bad.stderr
    gone = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "approvals", "--url", "http://127.0.0.1:9"],
        env=cli_env(c, ALICE),
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    assert (
        f"✔ {ap} approved by Alice: fine" in text
        and "← deleted 3 files" in text
        and text.rstrip().endswith("■ completed")
    )

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


async def test_watch_tells_who_else_watches_and_who_types(hub1: Cluster, tmp_path: Path) -> None:
    """`runcast watch` prints who comes to watch the run, who starts typing to its agent and who leaves (presence),
    one dim line each, never the watcher itself, and goes on to the run's end as before."""
    c = hub1
    run_id = c.start_run("demo", "tidy up")
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    out = tmp_path / "onlookers.txt"
    w = watch(c, VIEWER, run_id, out)
    wait_text(out, "⏸ paused")
    ada = await Client.connect(c.ws_url(), OPERATOR)
    assert (await ada.subscribe(run_id))["type"] == "sync"
    wait_text(out, "· Ada is watching")
    assert (await ada.request({"type": "typing", "run_id": run_id, "typing": True}))["type"] == "ack"
    wait_text(out, "· Ada is typing…")
    await ada.close()
    wait_text(out, "· Ada left")
    assert cli(c, ALICE, "approve", run_id, ap).returncode == 0
    assert w.wait(30) == 0
    text = out.read_text()
    assert text.rstrip().endswith("■ completed")
    assert [line for line in text.splitlines() if line.startswith("· ") and "Vic" in line] == []
    lines = text.splitlines()
    assert lines.index("· Ada is watching") < lines.index("· Ada is typing…") < lines.index("· Ada left")


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


# ------------------------------------------------------------------------------------------------ like gh

# What a hostile run carries: an OSC title change, a screen clear, a bell, a C1 CSI (0x9b), Rich markup and emoji
# codes, and a right-to-left override.
HOSTILE = "tidy \x1b]0;pwned\x07 \x1b[2J \x9b31m [bold red]loud[/] :skull: \u202eevil"
SHOWN = "tidy ^[]0;pwned^G ^[[2J ^[[31m [bold red]loud[/] :skull: <U+202E>evil"  # how the terminal commands print it
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def pty_run(c: Cluster, tok: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """A terminal command in a pseudo-terminal, to its end; what the terminal received."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "runcast.cli", *args],
        env=cli_env(c, tok) | {"TERM": "xterm-256color"} | (env or {}),
        encoding="utf-8",
        dimensions=(40, 200),
        timeout=timeout,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before


def colours(text: str) -> list[str]:
    """The SGR colour parameters (foreground, background) in `text`: 30-38, 40-48, 90-97, 100-107."""
    out = []
    for params in SGR.findall(text):
        out += [p for p in params.split(";") if p.isdigit() and (30 <= int(p) <= 48 or 90 <= int(p) <= 107)]
    return out


def no_controls(text: str, allow_sgr: bool = False) -> None:
    """Nothing in `text` acts on a terminal: no ESC (but Rich's own colour codes when `allow_sgr`), BEL, C1 or bidi
    override."""
    if allow_sgr:
        text = SGR.sub("", text)
    for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert ch not in text, (ch, text[max(0, text.find(ch) - 100) : text.find(ch) + 100])


def test_runs_lists_runs_with_filters_and_start_follows_a_run(hub1: Cluster) -> None:
    c = hub1
    dana = token("dana", ["operator"], name="Dana")
    mine = c.start_run("demo", "tidy up", tok=dana)
    other = c.start_run("demo-quorum", "ship it")
    c.wait_status(mine, "paused")
    c.wait_status(other, "paused")

    piped = cli(c, ADMIN, "runs")  # through a pipe: one run a line, tab-separated, no colour
    assert piped.returncode == 0, piped.stderr
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert rows[0][:4] == [other, "demo-quorum", "paused", "Ada"] and rows[1][:4] == [mine, "demo", "paused", "Dana"]
    assert rows[1][5] == "tidy up" and "\x1b" not in piped.stdout

    def listed(*args: str, tok: str = ADMIN) -> list[str]:
        r = cli(c, tok, "runs", *args)
        assert r.returncode == 0, r.stderr
        return [line.split("\t")[0] for line in r.stdout.splitlines() if line.split("\t")[0] in (mine, other)]

    assert listed("--agent", "demo") == [mine]
    assert listed("--started-by", "dana") == [mine] and listed("--mine", tok=dana) == [mine]
    assert listed("--search", "SHIP") == [other]
    assert listed("--status", "completed") == [] and listed("--status", "paused") == [other, mine]
    assert listed("--needs-me", tok=ALICE) == [other, mine] and listed("--needs-me", tok=VIEWER) == []
    as_json = json.loads(cli(c, ADMIN, "runs", "--json", "--agent", "demo-quorum").stdout)
    assert (
        as_json[0]["run_id"] == other
        and as_json == c.http("GET", "/api/runs?agent=demo-quorum&limit=30").json()["runs"]
    )
    bad = cli(c, ADMIN, "runs", "--status", "sleeping")
    assert bad.returncode == 1 and "status" in bad.stderr

    # start: the id alone with --detach; else it follows the run to its end, with watch's exit codes
    detached = cli(c, OPERATOR, "start", "demo", "detached", "--detach")
    assert detached.returncode == 0 and re.fullmatch(r"run_[0-9a-f]+\n", detached.stdout), detached
    assert json.loads(cli(c, OPERATOR, "start", "quick", "hi", "--detach", "--json").stdout)["run_id"].startswith(
        "run_"
    )
    assert c.wait_status(detached.stdout.strip(), "paused")["agent"] == "demo"
    out = Path(c.tmp) / "start.txt"
    follow = subprocess.Popen(
        [sys.executable, "-m", "runcast.cli", "start", "demo", "tidy up"],
        env=cli_env(c, OPERATOR),
        stdout=open(out, "wb"),
        stderr=subprocess.STDOUT,
    )
    text = wait_text(out, "runcast approve")
    run_id = re.search(r"started (run_[0-9a-f]+)", text).group(1)
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]
    assert cli(c, ALICE, "approve", run_id, ap).returncode == 0
    assert follow.wait(60) == 0
    text = out.read_text()
    assert f"▶ {run_id}: agent demo, started by Ada: tidy up" in text and text.rstrip().endswith("■ completed")
    assert "\x1b" not in text
    failed = cli(c, OPERATOR, "start", "broken", "hi")
    assert failed.returncode == 3 and "■ failed" in failed.stdout
    nope = cli(c, VIEWER, "start", "demo", "hi")
    assert nope.returncode == 1 and "not allowed" in nope.stderr


def test_watch_without_a_run_offers_a_picker_on_a_terminal_and_fails_clearly_in_a_pipe(hub1: Cluster) -> None:
    c = hub1
    older = c.start_run("demo", "the older one")
    newer = c.start_run("demo", "the newer one")
    c.wait_status(older, "paused")
    c.wait_status(newer, "paused")

    piped = cli(c, VIEWER, "watch")
    assert piped.returncode == 2 and piped.stdout == ""
    assert "pass a run id" in piped.stderr and "runcast runs" in piped.stderr, piped.stderr

    child = pexpect.spawn(
        sys.executable,
        ["-m", "runcast.cli", "watch"],
        env=cli_env(c, VIEWER) | {"TERM": "xterm-256color"},
        encoding="utf-8",
        dimensions=(40, 200),
        timeout=60,
        preexec_fn=interruptible,
    )
    child.expect("Which run")
    child.expect("the older one")  # live runs, newest first: the newer one is listed above it
    assert child.before.index(newer) < child.before.index(older)
    child.send("\x1b[B")  # down: the second run
    child.send("\r")
    child.expect(f"▶ .*{older}.*: agent .*demo.*the older one")
    child.expect("runcast approve")
    child.sendcontrol("c")  # stop watching; the run goes on
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert c.wait_status(older, "paused")["status"] == "paused"


def test_colour_on_a_terminal_none_in_a_pipe_or_with_no_color(hub1: Cluster) -> None:
    c = hub1
    run_id = c.start_run("demo", "colour me")
    c.wait_status(run_id, "paused")
    on_tty = pty_run(c, ADMIN, "runs", "--status", "paused")
    assert run_id in on_tty and colours(on_tty), repr(on_tty[:500])
    done = c.start_run("quick", "hi")
    c.wait_status(done, "completed")
    watched = pty_run(c, VIEWER, "watch", done, "--json")  # --json on a terminal: exact JSON, no colour
    assert "\x1b" not in watched and json.loads(watched.splitlines()[0])["type"] == "run.started"
    no_color = pty_run(c, ADMIN, "runs", "--status", "paused", env={"NO_COLOR": "1"})
    assert run_id in no_color and colours(no_color) == [], repr(no_color[:500])
    piped = cli(c, ADMIN, "runs", "--status", "paused")
    assert run_id in piped.stdout and "\x1b" not in piped.stdout


def test_control_characters_in_run_data_are_shown_never_sent(hub1: Cluster, tmp_path: Path) -> None:
    c = hub1
    mallory = token("mallory", ["approver"], name="Mal\x1b]0;owned\x07lory\x9b2J")
    run_id = c.start_run("echo", HOSTILE)
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]

    listed = cli(c, ALICE, "approvals")
    no_controls(listed.stdout)
    assert SHOWN in listed.stdout
    in_runs = cli(c, ADMIN, "runs", "--agent", "echo")
    no_controls(in_runs.stdout)
    assert SHOWN in in_runs.stdout
    as_json = cli(c, ALICE, "approvals", "--json")
    no_controls(as_json.stdout)
    assert [a for a in json.loads(as_json.stdout) if a["run_id"] == run_id][0]["run"]["input"] == HOSTILE

    assert cli(c, mallory, "reject", run_id, ap, "--reason", "no \x1b[2J\x07 way").returncode == 0
    c.wait_status(run_id, "completed")
    watched = cli(c, VIEWER, "watch", run_id)
    assert watched.returncode == 0, watched.stderr
    no_controls(watched.stdout)
    for shown in (
        f"started by Ada: {SHOWN}",
        f"You said {SHOWN}",
        "rejected by Mal^[]0;owned^Glory^[[2J: no ^[[2J^G way",
    ):
        assert shown in watched.stdout, (shown, watched.stdout)
    on_tty = pty_run(c, VIEWER, "watch", run_id)  # on a terminal: Rich's own colours, and nothing else
    no_controls(on_tty, allow_sgr=True)
    assert SHOWN in SGR.sub("", on_tty)
    as_json = cli(c, VIEWER, "watch", run_id, "--json")
    no_controls(as_json.stdout)
    lines = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert lines == c.log_events(run_id)[: len(lines)] and lines[0]["data"]["input"] == HOSTILE

    audit = cli(c, VIEWER, "audit", run_id)
    no_controls(audit.stdout)
    assert json.loads(audit.stdout) == c.http("GET", f"/api/runs/{run_id}/audit").json() | {
        "exported_at": json.loads(audit.stdout)["exported_at"]
    }
    csv_out = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "audit", run_id, "--csv"],
        env=cli_env(c, VIEWER),
        capture_output=True,
        timeout=60,
    )
    assert csv_out.returncode == 0
    text = csv_out.stdout.decode()
    no_controls(text)
    assert "Mal^[]0;owned^Glory^[[2J" in text and text.count("\r\n") == c.http(
        "GET", f"/api/runs/{run_id}/audit?format=csv"
    ).text.count("\r\n")

    out = tmp_path / "start.txt"
    follow = subprocess.Popen(
        [sys.executable, "-m", "runcast.cli", "start", "echo", HOSTILE],
        env=cli_env(c, OPERATOR),
        stdout=open(out, "wb"),
        stderr=subprocess.STDOUT,
    )
    text = wait_text(out, "runcast approve")
    new = re.search(r"started (run_[0-9a-f]+)", text).group(1)
    c.http("POST", f"/api/runs/{new}/cancel", OPERATOR, json={})
    assert follow.wait(60) == 4
    text = out.read_text()
    no_controls(text)
    assert f"You said {SHOWN}" in text


def test_deadlines_count_down_on_the_hubs_clock(hub1: Cluster, tmp_path: Path) -> None:
    """A terminal whose clock is five minutes slow still reads the hub's ten-minute deadline as about ten minutes."""
    c = hub1
    slow = tmp_path / "slowclock"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\n_real = time.time\ntime.time = lambda: _real() - 300\n")
    env = cli_env(c, ALICE)
    env["PYTHONPATH"] = f"{slow}{os.pathsep}{env['PYTHONPATH']}"
    run_id = c.start_run("echo", "what time is it")
    ap = c.wait_status(run_id, "paused")["pending_approvals"][0]["approval_id"]

    def left(text: str) -> int:
        m = re.search(rf"{ap}.*?expires in (\d+):(\d\d) \(at (\d\d:\d\d:\d\d) UTC\)", text, re.S)
        assert m, text
        return int(m.group(1)) * 60 + int(m.group(2))

    listed = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "approvals"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    # By the local clock it would be 15 minutes. 601: uvicorn refreshes its cached Date header on its loop's tick,
    # which a loaded machine can make a second late (a clean-clone CI run read 601 once).
    assert 480 <= left(listed.stdout) <= 601
    watched = subprocess.Popen(
        [sys.executable, "-m", "runcast.cli", "watch", run_id],
        env=env,
        stdout=open(tmp_path / "w.txt", "wb"),
        stderr=subprocess.STDOUT,
    )
    text = wait_text(tmp_path / "w.txt", "runcast approve")
    assert 480 <= left(text) <= 600
    watched.kill()
    watched.wait()


def test_token_from_a_file_and_a_warning_for_one_on_the_command_line(hub1: Cluster, tmp_path: Path) -> None:
    c = hub1
    f = tmp_path / "token"
    f.write_text(ALICE + "\n")
    f.chmod(0o600)
    ok = cli(c, None, "approvals", "--token-file", str(f))
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    env = cli_env(c, None) | {"RUNCAST_TOKEN_FILE": str(f)}
    by_env = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "approvals"], env=env, capture_output=True, text=True, timeout=60
    )
    assert by_env.returncode == 0 and by_env.stderr == "", by_env.stderr
    f.chmod(0o644)
    shared = cli(c, None, "approvals", "--token-file", str(f))
    assert shared.returncode == 0 and "can be read by other users" in shared.stderr and "chmod 600" in shared.stderr
    missing = cli(c, None, "approvals", "--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read the token file" in missing.stderr
    on_line = cli(c, None, "approvals", "--token", ALICE)
    assert on_line.returncode == 0 and "/proc/PID/cmdline" in on_line.stderr and "--token-file" in on_line.stderr
    none = cli(c, None, "approvals")
    assert none.returncode == 2 and "RUNCAST_TOKEN" in none.stderr and "--token-file" in none.stderr


def test_the_demo_prints_a_token_for_the_terminal(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env.pop("RUNCAST_SECRET")
    port = free_port()
    proc = Process(["serve", "--port", str(port)], env, tmp_path / "serve.log", port).start()
    try:
        deadline = time.monotonic() + 30
        while "export RUNCAST_URL=" not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = re.search(r"export (RUNCAST_URL=\S+) (RUNCAST_TOKEN=\S+)", (tmp_path / "serve.log").read_text())
        assert line, (tmp_path / "serve.log").read_text()
        exported = dict(kv.split("=", 1) for kv in line.groups())
        assert exported["RUNCAST_URL"] == f"http://127.0.0.1:{port}"
        py = f"{sys.executable} -m runcast.cli"
        shell = subprocess.run(
            ["bash", "-c", f"{line.group(0)} && {py} start demo hi --detach && {py} runs"],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "server"), "NO_PROXY": "127.0.0.1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shell.returncode == 0, shell.stderr
        run_id = shell.stdout.splitlines()[0]
        assert shell.stdout.splitlines()[1].split("\t")[:2] == [run_id, "demo"]
    finally:
        proc.stop()


def test_make_demo_says_what_it_installs(tmp_path: Path) -> None:
    """The first `make demo` is not silent: it says each step, and pip shows its progress (no -q)."""
    dry = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    steps = dry.stdout.splitlines()
    installs = [s for s in steps if "pip install" in s and "-e" in s]
    assert installs and all(" -q" not in s for s in installs), steps
    said = [s for s in steps if s.startswith("echo")]
    assert any("Installing" in s for s in said) and any("Starting" in s for s in said), steps
    assert steps.index(said[0]) < steps.index(installs[0])


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
        assert (
            f"mentions you: Vic on {run_id} approval {ap}" in inbox.stdout
            and "is build-cache.tar still used?" in inbox.stdout
        )
        as_json = json.loads(cli(c, OPERATOR, "inbox", "--json").stdout)
        assert [m["comment_id"] for m in as_json["mentions"] if m["run_id"] == run_id] == [cid]
        alice = cli(c, ALICE, "inbox")
        assert f"needs your decision: {run_id} {ap}" in alice.stdout and "mentions you" not in alice.stdout
    finally:
        c.http("POST", f"/api/runs/{run_id}/cancel", OPERATOR, json={})
        w.wait(timeout=60)


def test_audit_across_runs_by_person_with_csv_and_json(hub1: Cluster) -> None:
    """`runcast audit --person alice --since ...`: the decisions across runs (GET /api/audit), newest first; run data
    goes through visible(); --csv and --json; a nonsense filter is the hub's bad_request, and no traceback."""
    from datetime import datetime, timezone

    c = hub1
    since = datetime.now(timezone.utc).isoformat()
    one = c.start_run("demo", "tidy up")
    ap1 = c.wait_status(one, "paused")["pending_approvals"][0]["approval_id"]
    assert cli(c, ALICE, "approve", one, ap1, "--reason", "old \x1b[31mlogs").returncode == 0
    two = c.start_run("demo", "tidy up")
    ap2 = c.wait_status(two, "paused")["pending_approvals"][0]["approval_id"]
    assert cli(c, BOB, "reject", two, ap2, "--reason", "keep them").returncode == 0
    three = c.start_run("demo", "tidy up")
    ap3 = c.wait_status(three, "paused")["pending_approvals"][0]["approval_id"]
    assert cli(c, ALICE, "reject", three, ap3).returncode == 0

    piped = cli(c, ADMIN, "audit", "--person", "alice", "--since", since)
    assert piped.returncode == 0, piped.stderr
    lines = [ln.split("\t") for ln in piped.stdout.splitlines()]
    assert [(ln[1], ln[3], ln[4], ln[5], ln[6]) for ln in lines] == [
        ("rejected", "delete_files", "Alice", three, ap3),
        ("approved", "delete_files", "Alice", one, ap1),
    ]
    assert lines[1][7] == "old ^[[31mlogs" and "\x1b" not in piped.stdout
    as_json = json.loads(cli(c, ADMIN, "audit", "--person", "bob", "--since", since, "--json").stdout)
    assert [(e["run_id"], e["outcome"], e["reason"]) for e in as_json["entries"]] == [(two, "rejected", "keep them")]
    as_csv = cli(c, ADMIN, "audit", "--person", "alice", "--since", since, "--outcome", "approved", "--csv").stdout
    assert as_csv.splitlines()[0].startswith("settled_at,outcome,run_id,approval_id,")
    assert [ln.split(",")[2] for ln in as_csv.splitlines()[1:]] == [one]
    # paging under the hood: --limit 1 gives the newest only
    assert [
        ln.split("\t")[5]
        for ln in cli(c, ADMIN, "audit", "--person", "alice", "--since", since, "--limit", "1").stdout.splitlines()
    ] == [three]
    bad = cli(c, ADMIN, "audit", "--since", "last tuesday")
    assert bad.returncode != 0 and "since" in bad.stderr and "Traceback" not in bad.stderr
    both = cli(c, ADMIN, "audit", one, "--person", "alice")
    assert both.returncode != 0 and "across runs" in both.stderr and "Traceback" not in both.stderr
    assert cli(c, VIEWER, "audit", "--person", "alice").returncode != 0  # a viewer reads per run only
