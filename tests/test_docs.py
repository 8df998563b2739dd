"""The documentation site: `mkdocs build --strict` passes, offline, and a broken link fails it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from hubtest import ROOT

MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]
# Nothing may be fetched while building: any HTTP(S) request meets a closed local port.
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "NO_MKDOCS_2_WARNING": "1",
    "PYTHONPATH": str(ROOT / "server"),
}


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS, "-f", str(root / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        env=os.environ | OFFLINE,
        timeout=300,
        cwd=root,
    )


def test_the_site_builds_strictly_offline_and_fetches_nothing_when_viewed(tmp_path: Path) -> None:
    out = build(ROOT, tmp_path / "site")
    assert out.returncode == 0, out.stdout + out.stderr
    pages = list((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= 15
    external = set()
    for page in pages:
        html = page.read_text()
        external |= set(re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(https?://[^"]+)"', html))
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html, page
    assert not external, external
    ws = (tmp_path / "site" / "reference" / "websocket" / "index.html").read_text()
    assert "subscribe_runs" in ws and "approval.requested" in ws and "4408" in ws
    http = (tmp_path / "site" / "reference" / "http" / "index.html").read_text()
    assert "/api/runs/{run_id}/events" in http
    assert (tmp_path / "site" / "openapi.json").exists() and (tmp_path / "site" / "asyncapi.json").exists()


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "concepts.md").open("a") as f:
        f.write("\nSee [the missing page](no-such-page.md).\n")
    out = build(copy, tmp_path / "site")
    assert out.returncode != 0
    assert "no-such-page.md" in out.stdout + out.stderr


def test_the_readme_is_short_and_links_the_docs() -> None:
    """The README says what Runcast is, shows it, gives the two commands and links the docs; the rest is in docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    assert "make demo" in text and "make test" in text and "docs/screenshot.png" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link
