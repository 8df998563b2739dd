"""Approval policies are keyed by the tool name the wire shows; a key that names no tool (or several) is an error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from agents import Agent, function_tool, handoff
from agents.tool import tool_namespace

from hubtest import ROOT, base_env, free_port

from runcast import AgentSpec, ApprovalPolicy, Registry
from runcast.registry import PolicyError
from runcast.toolnames import tool_names

FINANCE = ApprovalPolicy(roles=["finance"])


@function_tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return path


@function_tool
def read_file(path: str) -> str:
    """Read a file."""
    return path


FILES = tool_namespace(name="files", description="Files", tools=[delete_file])
BACKUPS = tool_namespace(name="backups", description="Backups", tools=[delete_file])


def test_the_full_name_is_the_key_and_the_lookup():
    spec = AgentSpec(Agent(name="A", tools=[*FILES, read_file]), {"files.delete_file": FINANCE})
    assert spec.policy_for("files.delete_file") is FINANCE
    assert spec.policy_for("delete_file").roles == ["approver"]  # not a tool of this agent: the default


def test_a_bare_key_names_its_one_tool_and_is_stored_under_the_full_name():
    spec = AgentSpec(Agent(name="A", tools=[*FILES]), {"delete_file": FINANCE})
    assert spec.policies == {"files.delete_file": FINANCE}
    assert spec.policy_for("files.delete_file") is FINANCE


def test_a_bare_key_shared_by_two_namespaces_is_an_error():
    with pytest.raises(PolicyError, match="ambiguous.*backups.delete_file, files.delete_file"):
        AgentSpec(Agent(name="A", tools=[*FILES, *BACKUPS]), {"delete_file": FINANCE})
    # the full names are fine, each with its own policy
    spec = AgentSpec(
        Agent(name="A", tools=[*FILES, *BACKUPS]),
        {"files.delete_file": FINANCE, "backups.delete_file": ApprovalPolicy()},
    )
    assert spec.policy_for("files.delete_file") is FINANCE and spec.policy_for("backups.delete_file").roles == [
        "approver"
    ]


def test_a_bare_and_a_full_key_for_one_tool_is_an_error():
    with pytest.raises(PolicyError, match="name the same tool"):
        AgentSpec(Agent(name="A", tools=[*FILES]), {"files.delete_file": FINANCE, "delete_file": ApprovalPolicy()})


def test_a_key_that_names_no_tool_lists_the_tools_that_exist():
    with pytest.raises(PolicyError, match=r"'delete_fiel' matches no tool.*files\.delete_file, read_file"):
        AgentSpec(Agent(name="A", tools=[*FILES, read_file]), {"delete_fiel": FINANCE})


def test_handoff_targets_and_agents_used_as_tools_are_part_of_the_agent():
    @function_tool(needs_approval=True)
    def refund(cents: int) -> str:
        """Refund."""
        return str(cents)

    @function_tool(needs_approval=True)
    def restart(service: str) -> str:
        """Restart."""
        return service

    billing = Agent(name="Billing", tools=[refund])
    ops = Agent(name="Ops", tools=[restart])
    triage = Agent(name="Triage", handoffs=[handoff(ops)], tools=[billing.as_tool("billing", "Billing questions")])
    names = tool_names(triage).names
    assert {"refund", "restart", "billing", "transfer_to_ops"} <= names
    spec = AgentSpec(triage, {"refund": FINANCE, "restart": ApprovalPolicy(roles=["operator"])})
    assert spec.policy_for("refund") is FINANCE


def test_mcp_servers_are_keyed_by_their_label():
    from agents import HostedMCPTool

    mcp = HostedMCPTool(
        tool_config={
            "type": "mcp",
            "server_label": "crm",
            "server_url": "http://127.0.0.1:9",
            "require_approval": "always",
        }
    )
    spec = AgentSpec(
        Agent(name="A", tools=[mcp]), {"crm.delete_contact": FINANCE, "crm.*": ApprovalPolicy(roles=["operator"])}
    )
    assert spec.policy_for("crm.delete_contact") is FINANCE
    assert spec.policy_for("crm.list_contacts").roles == ["operator"]
    with pytest.raises(PolicyError, match="matches no tool"):
        AgentSpec(Agent(name="A", tools=[mcp]), {"crm2.x": FINANCE})


def test_module_policies_for_bare_agents(tmp_path, monkeypatch):
    (tmp_path / "shared_policies_mod.py").write_text(
        "from agents import Agent, function_tool\n"
        "@function_tool(needs_approval=True)\ndef refund(cents: int) -> str:\n    'r'\n    return ''\n"
        "AGENTS = {'a': Agent(name='A', tools=[refund]), 'b': Agent(name='B')}\n"
        "POLICIES = {'refund': {'roles': ['finance']}}\n"
    )
    (tmp_path / "typo_policies_mod.py").write_text(
        "from agents import Agent, function_tool\n"
        "@function_tool(needs_approval=True)\ndef refund(cents: int) -> str:\n    'r'\n    return ''\n"
        "AGENTS = {'a': Agent(name='A', tools=[refund])}\n"
        "POLICIES = {'refnud': {'roles': ['finance']}}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry.from_module("shared_policies_mod")
    assert reg.get("a").policy_for("refund").roles == ["finance"]
    assert reg.get("b").policies == {}
    with pytest.raises(SystemExit, match="'refnud' matches no tool.*refund"):
        Registry.from_module("typo_policies_mod")


def test_serve_with_a_policy_key_that_names_nothing_exits_with_the_tool_names(tmp_path):
    (tmp_path / "bad_agents.py").write_text(
        "from agents import Agent, function_tool\n"
        "from agents.tool import tool_namespace\n"
        "from runcast import AgentSpec, ApprovalPolicy\n"
        "@function_tool(needs_approval=True)\ndef delete_file(path: str) -> str:\n    'd'\n    return path\n"
        "AGENTS = {'files': AgentSpec(Agent(name='Files', tools=tool_namespace(name='files', description='f', tools=[delete_file])),\n"
        "                             {'files.delete': ApprovalPolicy(roles=['finance'])})}\n"
    )
    env = base_env(tmp_path)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    proc = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "serve", "--port", str(free_port()), "--agents", "bad_agents"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "'files.delete' matches no tool" in proc.stderr and "files.delete_file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
