"""`runcast serve --processes 2 --redis URL`: two hub processes on one port and a worker process; connections are
spread over the hubs, every watcher gets the whole run whichever process it landed on, and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from hubtest import OPERATOR, VIEWER, Client, Process, base_env, free_port
from redis_server import RedisServer


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError):
                pass
    return out


def sockets(pid: int) -> int:
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            n += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return n


def listening(pid: int, port: int) -> bool:
    """Whether the process has a socket listening on the port (state 0A in /proc/PID/net/tcp, inode among its fds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[1].split(":")[1], 16) == port and f[9] in inodes:
            return True
    return False


async def test_two_hub_processes_share_one_port_and_every_watcher_gets_the_whole_run(tmp_path: Path) -> None:
    redis = RedisServer()
    redis.start()
    port = free_port()
    node = Process(
        [
            "serve",
            "--port",
            str(port),
            "--processes",
            "2",
            "--redis",
            redis.url,
            "--agents",
            "demo",
            "--agents",
            "agents_fixture",
        ],
        base_env(tmp_path, RUNCAST_COALESCE_S="0"),
        tmp_path / "node.log",
        port,
    )
    try:
        node.start(wait=False)
        node.wait_ready(timeout=90)  # three processes start at once: slow on a busy machine
        assert node.proc is not None
        kids = children(node.proc.pid)
        assert len(kids) == 3, kids  # two hubs and a worker
        cmdlines = {k: Path(f"/proc/{k}/cmdline").read_text().split("\0") for k in kids}
        hubs = [k for k, c in cmdlines.items() if "serve" in c]
        assert len(hubs) == 2 and all("--no-worker" in cmdlines[k] for k in hubs)
        deadline = time.monotonic() + 60
        while not all(listening(k, port) for k in hubs) and time.monotonic() < deadline:
            time.sleep(0.1)  # the first hub up answered /healthz; wait for the other to listen too
        before = {k: sockets(k) for k in hubs}

        watchers = [
            await Client.connect(node.ws_url, VIEWER, encoding="msgpack" if i % 2 else "json") for i in range(24)
        ]
        after = {k: sockets(k) for k in hubs}
        assert all(after[k] > before[k] for k in hubs), (before, after)  # both processes took connections

        starter = await Client.connect(node.ws_url, OPERATOR)
        ack = await starter.request({"type": "start", "agent": "long-turn", "input": "go"})
        run_id = ack["run_id"]
        for w in watchers:
            await w.subscribe(run_id)
        ends = [await w.wait_event(run_id, "run.paused", timeout=60) for w in watchers]
        head = ends[0]["seq"]
        for w in watchers:
            seqs = [e["seq"] for e in w.events(run_id)]
            assert seqs[: seqs.index(head) + 1] == list(range(1, head + 1))
        for c in [*watchers, starter]:
            await c.close()

        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(20) == 0
        assert not [
            k for k in kids if Path(f"/proc/{k}").exists() and "zombie" not in Path(f"/proc/{k}/status").read_text()
        ]
    finally:
        node.kill()
        for k in children(node.proc.pid) if node.proc else []:
            os.kill(k, signal.SIGKILL)
        redis.cleanup()


def test_the_supervisor_gives_its_children_the_longest_drain_before_killing_them() -> None:
    """It killed every child 15 s after SIGTERM, cutting the worker's own 25 s grace (its segments finishing)."""
    from argparse import Namespace

    from runcast.processes import STOP_MARGIN_S, stop_timeout

    hubs = Namespace(drain_delay=0.0, grace=5.0, no_worker=False)
    assert stop_timeout(hubs, {}) == 25 + STOP_MARGIN_S  # the worker's default grace is the longest
    assert stop_timeout(hubs, {"RUNCAST_WORKER_GRACE_S": "45"}) == 45 + STOP_MARGIN_S
    slow = Namespace(drain_delay=20.0, grace=10.0, no_worker=False)
    assert stop_timeout(slow, {}) == 30 + STOP_MARGIN_S  # a hub's drain delay and grace, when they are longer
    assert stop_timeout(Namespace(drain_delay=0.0, grace=5.0, no_worker=True), {}) == 5 + STOP_MARGIN_S


def test_the_worker_child_gets_the_demo_agents_model_settings() -> None:
    """`serve --processes N --model M --model-api chat --tracing openai`: the worker child streams the runs, so it
    must talk to the model the same way (its hubs get the parent's command line as it is)."""
    from argparse import Namespace

    from runcast.processes import worker_argv

    args = Namespace(
        redis="redis://r",
        concurrency=4,
        max_log=10,
        retention=60.0,
        lease=10.0,
        agents=None,
        model="m",
        model_api="chat",
        tracing="openai",
    )
    argv = worker_argv(args)
    assert argv[argv.index("--model") + 1] == "m" and argv[argv.index("--model-api") + 1] == "chat"
    assert argv[argv.index("--tracing") + 1] == "openai"
    assert "--tracing" not in worker_argv(Namespace(**{**vars(args), "tracing": None}))  # the child decides it alike
