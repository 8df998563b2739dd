"""An agent with its own webhooks (`notify`), for the webhook tests: `--agents agents_webhooks`, with the receiver's
URL in RUNCAST_TEST_NOTIFY_URL. The agent's notify gets its runs' endings; the tool's policy notify gets its approvals."""

import os

from runcast import AgentSpec, ApprovalPolicy
from runcast.demo import demo_registry

_url = os.environ["RUNCAST_TEST_NOTIFY_URL"].rstrip("/")
_demo = demo_registry(expires_s=None).get("demo")
assert _demo is not None

AGENTS = {
    "notify-demo": AgentSpec(
        _demo.agent,
        {
            "delete_files": ApprovalPolicy(
                roles=["approver"],
                notify=[{"url": f"{_url}/tool", "format": "slack", "events": ["approval.requested"]}],
            )
        },
        notify=[{"url": f"{_url}/agent", "events": "run.completed,run.failed,run.cancelled"}],
    ),
}
