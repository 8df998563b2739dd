"""The benchmark's agent: a scripted model that streams BENCH_WORDS words as fast as it can, then answers.

Loaded with `--agents bench_agents` (bench/ on PYTHONPATH). With RUNCAST_COALESCE_S=0 every word is one `message.delta`
event, so one run is a firehose of BENCH_WORDS + a few events. With BENCH_GO_FILE set, the model waits for that file
to exist before it streams, so watchers can be connected and synced first (bench/fanout.py).
"""

import asyncio
import os
from typing import Any, AsyncIterator

from agents import Agent

from runcast.demo import DemoModel, Step

WORDS = int(os.environ.get("BENCH_WORDS", "2000"))
DELAY = float(os.environ.get("BENCH_DELAY", "0"))  # seconds between words: 0 is as fast as the SDK streams
GO_FILE = os.environ.get("BENCH_GO_FILE")
TEXT = " ".join(f"word{i}" for i in range(WORDS))


def _firehose(input_: Any) -> Step:
    return Step(TEXT)


class GatedModel(DemoModel):
    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        while GO_FILE and not os.path.exists(GO_FILE):
            await asyncio.sleep(0.01)
        async for ev in super().stream_response(*args, **kwargs):
            yield ev


AGENTS = {"firehose": Agent(name="Firehose", model=GatedModel(_firehose, delay=DELAY))}
