"""The benchmark's agent: a scripted model that streams BENCH_WORDS words as fast as it can, then answers.

Loaded with `--agents bench_agents` (bench/ on PYTHONPATH). With RUNCAST_COALESCE_S=0 every word is one `message.delta`
event, so one run is a firehose of BENCH_WORDS + a few events.
"""

import os
from typing import Any

from agents import Agent

from runcast.demo import DemoModel, Step

WORDS = int(os.environ.get("BENCH_WORDS", "2000"))
DELAY = float(os.environ.get("BENCH_DELAY", "0"))  # seconds between words: 0 is as fast as the SDK streams
TEXT = " ".join(f"word{i}" for i in range(WORDS))


def _firehose(input_: Any) -> Step:
    return Step(TEXT)


AGENTS = {"firehose": Agent(name="Firehose", model=DemoModel(_firehose, delay=DELAY))}
