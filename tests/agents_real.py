"""A user's own agent module for tests/test_real_model.py (`--agents agents_real`): its agent names its own model,
which `--model` / `--model-api` (the demo agents' settings) must leave alone."""

from agents import Agent

AGENTS = {"mine": Agent(name="Mine", model="user-own-model", instructions="Answer in one sentence.")}
