"""The terminal signs in like `gh auth login`: `runcast login --hub URL` with the OAuth device authorization grant of
a real OpenID Provider (tests/oidc: oidc-provider), the credentials in a 0600 file in the user's config dir, then
`runcast whoami`, a terminal command with no token, RUNCAST_TOKEN winning, `runcast logout`, and a declined sign-in."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from hubtest import BOB, ROOT, Cluster, base_env
from oidc_provider import CLIENT_SECRET, ROLE_MAP, OidcProvider, device_sign_in, drive


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("oidc-terminal")
    cluster = Cluster(tmp, "memory", env={"RUNCAST_LOG_LEVEL": "INFO"})
    op = OidcProvider([f"{cluster.url}/auth/callback"], tmp / "provider.log").start()
    secret = tmp / "secret"
    secret.write_text(CLIENT_SECRET)
    cluster.nodes[0].args += [
        "--oidc-issuer",
        op.issuer,
        "--oidc-client-id",
        "runcast",
        "--oidc-client-secret-file",
        str(secret),
        "--oidc-role-map",
        ROLE_MAP,
        "--oidc-cli-client-id",
        "runcast-cli",
    ]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        op.stop()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = base_env(home, XDG_CONFIG_HOME=str(home / "config"), **extra)
    for k in ("RUNCAST_SECRET", "RUNCAST_TOKEN", "RUNCAST_URL"):
        env.pop(k, None)
    env.update(extra)
    return env


def _runcast(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runcast.cli", *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _login(hub: Cluster, env: dict[str, str], person: str, abort: bool = False) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runcast.cli", "login", "--hub", hub.url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"Open (\S+) in a browser and enter the code (\S+) ", line)
        assert m, line + (proc.stderr.read() if proc.stderr else "")
        page = device_sign_in(httpx.Client(timeout=15), m.group(1), m.group(2), person, abort=abort)
        assert page.status_code < 500, page.text[:500]
        out, err = proc.communicate(timeout=120)
        return proc.returncode, line + out, err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_login_whoami_commands_and_logout(hub: Cluster, tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, out, err = _login(hub, env, "alex")
    assert code == 0, out + err
    assert f"Signed in to {hub.url} as Alex Approver (alex; approver, viewer)" in out, out
    creds = tmp_path / "config" / "runcast" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    saved: dict[str, Any] = json.loads(creds.read_text())["hubs"][hub.url]
    assert saved["user"]["sub"] == "alex" and saved["token"]
    assert saved["token"] not in out + err, "the token is never printed"

    who = _runcast(env, "whoami")
    assert who.returncode == 0 and who.stdout.startswith(f"Alex Approver (alex) on {hub.url}: approver, viewer"), who
    # a terminal command with no token and no hub named: the saved sign-in, for the hub signed in to
    listed = _runcast(env, "approvals", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [] or isinstance(json.loads(listed.stdout), (list, dict))
    # RUNCAST_TOKEN still wins
    bob = _runcast(env | {"RUNCAST_TOKEN": BOB, "RUNCAST_URL": hub.url}, "whoami")
    assert bob.returncode == 0 and bob.stdout.startswith("Bob (bob)") and "RUNCAST_TOKEN" in bob.stdout, bob

    out_ = _runcast(env, "logout")
    assert out_.returncode == 0 and f"Signed out of {hub.url}" in out_.stdout
    assert hub.url not in json.loads(creds.read_text())["hubs"]
    after = _runcast(env, "whoami", "--hub", hub.url)
    assert after.returncode == 1 and "runcast login --hub" in after.stderr


def test_a_declined_device_sign_in_says_so(hub: Cluster, tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, out, err = _login(hub, env, "alex", abort=True)
    assert code == 1 and "declined" in err and "runcast login" in err, out + err
    assert "Traceback" not in err
    assert not (tmp_path / "config" / "runcast" / "credentials.json").exists()


def test_groups_with_no_role_are_refused_with_what_to_do(hub: Cluster, tmp_path: Path) -> None:
    code, out, err = _login(hub, _env(tmp_path), "nora")
    assert code == 1 and "no role" in err and "oncall" in err, out + err
    assert "Traceback" not in err


def test_a_hub_without_a_terminal_sign_in_says_what_to_do(tmp_path: Path) -> None:
    hub = Cluster(tmp_path, "memory").start()
    try:
        r = _runcast(_env(tmp_path), "login", "--hub", hub.url)
        assert r.returncode == 1 and "RUNCAST_TOKEN" in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally:
        hub.stop()


def test_login_with_the_browser_and_a_loopback_redirect(hub: Cluster, tmp_path: Path) -> None:
    """Where a provider has no device flow (or with --method browser): this machine's browser (BROWSER=true opens
    nothing here; the test is the browser) and a one-shot server on 127.0.0.1."""
    env = _env(tmp_path, BROWSER="true")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runcast.cli", "login", "--hub", hub.url, "--method", "browser"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        head = proc.stdout.readline() + proc.stdout.readline()
        m = re.search(r"go to:\s+(\S+)", head)
        assert m, head
        url = m.group(1)
        redirect = re.search(r"redirect_uri=([^&]+)", url).group(1)  # type: ignore[union-attr]
        loopback = httpx.URL(httpx.QueryParams("r=" + redirect)["r"])
        client = httpx.Client(timeout=15)
        page = drive(client, client.get(url), f"http://127.0.0.1:{loopback.port}", "vic", callback="/callback")
        assert page.status_code == 200 and "Signed in" in page.text, page.text
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, head + out + err
    assert f"as Vic Viewer (vic; viewer)" in out
    who = _runcast(env, "whoami")
    assert who.returncode == 0 and who.stdout.startswith("Vic Viewer (vic)"), who
