"""A real, throw-away Redis Cluster for tests: three masters with one replica each, Debian's redis-server on free
ports, joined by `redis-cli --cluster create`. Nothing on disk outlives it.

    c = RedisCluster(); c.start(); ... c.url (any node) ...; c.migrate_slot(slot, dst); c.kill_master_of(slot); c.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import redis

from redis_server import REDIS_SERVER, _free_port, _ping

REDIS_CLI = shutil.which("redis-cli")
NODE_TIMEOUT_MS = 1500  # how long a master may be silent before its replica takes over (the failover test waits it)


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too, and below 65536."""
    import socket

    while True:
        port = _free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class Node:
    def __init__(self, port: int, dir_: str) -> None:
        self.port, self.dir = port, dir_
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "redis.log"), "ab") as logf:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    self.dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--logfile",
                    "",
                ],
                cwd=self.dir,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server and redis-cli are needed")
        self.dir = tempfile.mkdtemp(prefix="runcast-cluster-")
        self.replicas = replicas
        self.nodes = [
            Node(_free_cluster_port(), os.path.join(self.dir, str(i))) for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return f"redis://{self.nodes[0].addr}/0"

    def start(self, timeout: float = 30) -> RedisCluster:
        """Start and join the nodes; wait until every master has its replica online.

        Once, in CI right after the fresh install (pip and npm write a lot), the replicas were not online after 30 s,
        twice in a row; here it takes 2 s. The nodes fsync every write (`appendfsync always`), and on ext4 an fsync
        may wait for the writeback of other files' dirty pages: the likely cause. So the dirty pages are written first
        (`os.sync`), and a cluster that still does not come up is stopped (no node left running), its state and logs
        are printed, and it is made once more on other ports."""
        os.sync()
        for attempt in (1, 2):
            if attempt == 2:
                self.dir = tempfile.mkdtemp(prefix="runcast-cluster-")
                self.nodes = [
                    Node(_free_cluster_port(), os.path.join(self.dir, str(i))) for i in range(len(self.nodes))
                ]
            try:
                return self._start(timeout)
            except (RuntimeError, subprocess.SubprocessError, redis.RedisError) as exc:
                why = f"{exc}; {self._diagnose()}"
                self.stop()
                if attempt == 2:
                    raise RuntimeError(f"the Redis Cluster did not come up twice: {why}") from exc
                print(
                    f"redis_cluster: the cluster did not come up ({why}); trying once more on other ports",
                    file=sys.stderr,
                )
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> RedisCluster:
        for n in self.nodes:
            n.start()
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            while not _ping(n.port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {n.addr} did not start")
                time.sleep(0.02)
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *[n.addr for n in self.nodes],
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        deadline = time.monotonic() + timeout
        while not all(
            self.node_by_port(m["port"]).client().info("replication").get("slave0", {}).get("state") == "online"
            for m in self.masters()
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not come online")
            time.sleep(0.05)
        return self

    def _diagnose(self) -> str:
        """Each live node's role and replication state, and the last lines of its log (what a CI failure needs)."""
        out = []
        for n in self.live():
            try:
                info = n.client().info("replication")
                state = f"{info.get('role')} {info.get('slave0', info.get('master_link_status', ''))}"
            except redis.RedisError as exc:
                state = f"no answer ({exc})"
            try:
                with open(os.path.join(n.dir, "redis.log"), "rb") as f:
                    tail = b" | ".join(f.read().splitlines()[-3:]).decode(errors="replace")
            except OSError:
                tail = ""
            out.append(f"{n.addr}: {state}; log: {tail}")
        return "; ".join(out) or "no node is running"

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout: float = 30) -> None:
        """Every live node says cluster_state:ok and agrees on who serves every slot."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [n.client().cluster("info") for n in self.live()]
                if all(s["cluster_state"] == "ok" for s in states):
                    views = {
                        tuple(sorted((m["port"], tuple(map(tuple, m["slots"]))) for m in self._masters_seen_by(n)))
                        for n in self.live()
                    }
                    if len(views) == 1:
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not settle")
            time.sleep(0.1)

    def _masters_seen_by(self, node: Node) -> list[dict[str, Any]]:
        out = []
        for addr, info in node.client().cluster("nodes").items():
            flags = info["flags"]
            if "master" in flags and "fail" not in flags and info["slots"]:
                out.append(
                    {
                        "id": info["node_id"],
                        "port": int(addr.split(":")[1].split("@")[0]),
                        "slots": [[int(x) for x in r] for r in info["slots"]],
                    }
                )
        return out

    def masters(self) -> list[dict[str, Any]]:
        return self._masters_seen_by(self.live()[0])

    def node_by_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def keyslot(self, key: str) -> int:
        return int(self.live()[0].client().cluster("keyslot", key))

    def master_of(self, slot: int) -> Node:
        for m in self.masters():
            for r in m["slots"]:
                if r[0] <= slot <= r[-1]:
                    return self.node_by_port(m["port"])
        raise KeyError(slot)

    def node_id(self, node: Node) -> str:
        return node.client().execute_command("CLUSTER MYID").decode()

    def migrate_slot(self, slot: int, dst: Node, *, between_keys: Any = None) -> int:
        """Move one slot, keys and all, the way redis-cli --cluster reshard does: IMPORTING / MIGRATING, MIGRATE
        the keys in batches (clients meanwhile get ASK for the moved ones), then SETSLOT NODE on every master.
        `between_keys()` is called after each batch. Returns the number of keys moved."""
        src = self.master_of(slot)
        assert src is not dst
        s, d = src.client(), dst.client()
        src_id, dst_id = self.node_id(src), self.node_id(dst)
        d.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while True:
            keys = s.execute_command("CLUSTER GETKEYSINSLOT", slot, 2)
            if not keys:
                break
            s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if between_keys is not None:
                between_keys()
        for m in self.masters():
            self.node_by_port(m["port"]).client().execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        self.wait_ok()
        return moved

    def replicate(self, tag: str, timeout_ms: int = 3000) -> None:
        """Wait until the replica of the master serving `{tag}` has every write that master took so far (a write of
        ours in that slot, then WAIT: it waits for the master's offset, which covers every earlier write)."""
        c = self.master_of(self.keyslot(tag)).client()
        c.set(f"{{{tag}}}:test-wait", "1")
        got = c.execute_command("WAIT", 1, timeout_ms)
        assert int(got) >= 1, "the replica did not catch up"

    def kill_master_of(self, slot: int) -> Node:
        """kill -9 the master serving `slot` and wait until its replica has taken over. Returns the new master."""
        old = self.master_of(slot)
        old.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                new = self.master_of(slot)
                if new is not old and new.client().cluster("info")["cluster_state"] == "ok":
                    return new
            except (redis.RedisError, KeyError, IndexError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
