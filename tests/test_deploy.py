"""The deployment files, checked offline: the Kubernetes manifests against the Kubernetes schema (kubernetes-validate,
which ships the schemas: nothing is fetched), their wiring (selectors, probes, grace periods, the Secret), and the
Dockerfile's install step done the way the image does it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def docs() -> list[dict[str, Any]]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return out


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs() if d["kind"] == kind}


def flag(args: list[str], name: str) -> float:
    return float(args[args.index(name) + 1])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema_strictly(version: str) -> None:
    found = docs()
    assert {d["kind"] for d in found} >= {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "Secret"}
    for d in found:
        kubernetes_validate.validate(d, version, strict=True)
    # and the validator does refuse what the schema does not allow (a misspelt field), offline
    bad = yaml.safe_load((K8S / "hub.yaml").read_text().split("---")[0].replace("readinessProbe", "readynessProbe"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def test_the_manifests_are_wired_together() -> None:
    deps, services, pdbs = by_kind("Deployment"), by_kind("Service"), by_kind("PodDisruptionBudget")
    secret = by_kind("Secret")["runcast"]
    assert set(secret["stringData"]) == {"RUNCAST_SECRET", "RUNCAST_REDIS_URL"}  # Redis is external, by URL
    for name, d in deps.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs.values()), name
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["envFrom"] == [{"secretRef": {"name": "runcast"}}]
        assert (
            c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        )
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert c["readinessProbe"]["httpGet"]["port"] in ports
        args = c["args"]
        if args[0] == "serve":  # the drain fits in the grace period Kubernetes gives before SIGKILL
            assert "--no-worker" in args and ports["http"] == int(flag(args, "--port"))
            assert pod["terminationGracePeriodSeconds"] > flag(args, "--drain-delay") + flag(args, "--grace") + 5
        else:
            assert args[0] == "worker" and ports["metrics"] == int(flag(args, "--metrics-port"))
            assert pod["terminationGracePeriodSeconds"] > flag(args, "--grace") + 5
    hub_labels = deps["runcast-hub"]["spec"]["template"]["metadata"]["labels"]
    assert services["runcast-hub"]["spec"]["selector"].items() <= hub_labels.items()
    ing = by_kind("Ingress")["runcast"]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in services
    notes = ing["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600  # WebSockets stay open for hours
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600


def test_the_cli_accepts_the_arguments_the_manifests_pass() -> None:
    from runcast import cli

    for d in by_kind("Deployment").values():
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        with pytest.raises(SystemExit) as exit_:  # --help after the manifest's own arguments: parsed, then exits 0
            cli.main([*args, "--help"])
        assert exit_.value.code == 0


def test_the_dockerfile_install_step_gives_a_working_runcast(tmp_path: Path) -> None:
    """What the image's RUN does (pip install . from the files its COPY lines bring in), from a copy of exactly those
    files: the package builds and installs, `runcast --version` runs from it, and the page, its client (a symlink in
    the repository) and the Lua scripts are real files in it. The image's pip fetches the dependencies from PyPI;
    tests have no network, so here they come from the test's own environment and only the project is installed."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+?)\s+(\S+)\s*$", text, re.M)
    assert copies and re.search(r"^RUN pip install \. ", text, re.M), "the Dockerfile's install step changed"
    src = tmp_path / "src"
    src.mkdir()
    for sources, dest in copies:
        for s in shlex.split(sources):
            target = src / dest / Path(s).name if dest.endswith("/") else src / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / s).is_dir():
                shutil.copytree(ROOT / s, target, symlinks=True)  # as docker's COPY: links stay links
            else:
                shutil.copy2(ROOT / s, target)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            ".",
        ],
        check=True,
        cwd=src,
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(site), *sys.path[1:]])}
    where = subprocess.run(
        [sys.executable, "-c", "import runcast; print(runcast.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    pkg = Path(where).parent
    assert pkg.is_relative_to(site), pkg  # the installed copy was imported, not the repository
    for f in ("static/index.html", "static/client/runcast.js", "backends/redis/lua/commit.lua"):
        assert (pkg / f).is_file() and not (pkg / f).is_symlink(), f
    version = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert version.startswith("runcast ")
