"""Replay-then-live merging: every seq once, in order, whatever the overlap or holes between log and live feed."""

import random
from dataclasses import dataclass

from runcast.replay import Cursor


@dataclass(frozen=True)
class E:
    seq: int


def seqs(evs):
    return [e.seq for e in evs]


def test_overlap_between_history_and_live_is_delivered_once():
    c = Cursor(since=2)
    assert c.live(E(6)) == [] and c.live(E(7)) == []  # live arrives while the log is read: held
    out = c.history([E(3), E(4), E(5), E(6)])
    out += c.end_replay()
    assert seqs(out) == [3, 4, 5, 6, 7]
    assert seqs(c.live(E(7))) == [] and seqs(c.live(E(8))) == [8]


def test_gap_in_live_feed_asks_for_the_missing_range():
    c = Cursor(since=0)
    c.history([E(1), E(2)])
    c.end_replay()
    assert c.live(E(5)) == []
    assert c.gap() == (2, 4)
    assert seqs(c.history([E(3), E(4)])) == [3, 4, 5]
    assert c.gap() is None and c.last == 5


def test_random_interleavings_deliver_exactly_one_to_n():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 40)
        since = rng.randint(0, n)
        cut = rng.randint(since, n)  # log read sees up to `cut`; live sees everything after some point
        live_from = rng.randint(since + 1, n + 1)
        live = [E(s) for s in range(live_from, n + 1) if rng.random() > 0.2]  # some publishes lost
        c = Cursor(since)
        out = []
        half = rng.randint(0, len(live))
        for ev in live[:half]:
            out += c.live(ev)
        out += c.history([E(s) for s in range(since + 1, cut + 1)])
        out += c.end_replay()
        for ev in live[half:]:
            out += c.live(ev)
        while (g := c.gap()) is not None:
            out += c.history([E(s) for s in range(g[0] + 1, g[1] + 1)])
        got = seqs(out)
        assert got == list(range(since + 1, since + 1 + len(got)))  # in order, no repeat, no hole
        expected_last = max([cut] + [e.seq for e in live]) if (live or cut > since) else since
        assert c.last == expected_last


def test_overflow_is_flagged_not_grown():
    c = Cursor(since=0, max_held=3)
    for s in range(2, 8):
        c.live(E(s))
    assert c.overflow
