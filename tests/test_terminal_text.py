"""What the terminal commands print, as plain code (terminal.py, no hub): the one sanitizer, exact JSON, Rich never
reading run data as markup, and countdowns on the hub's clock."""

from __future__ import annotations

import io
import json
import time
from email.utils import formatdate

from runcast.terminal import HubClock, Out, json_text, left_text, visible

HOSTILE = "a\x1b]0;title\x07b\x1b[2Jc\x9b31md\x7fe\u202ef\rg\x00h\ti"


def test_visible_shows_every_control_character_and_keeps_the_rest() -> None:
    assert visible(HOSTILE) == "a^[]0;title^Gb^[[2Jc^[[31md^?e<U+202E>f^Mg^@h\ti"
    assert visible("line one\r\nline two\n") == "line one^M^Jline two^J"
    assert visible("line one\r\nline two\n", newlines=True) == "line one\nline two\n"
    assert visible("naïve 日本語 ✔ [bold]x[/] :skull:") == "naïve 日本語 ✔ [bold]x[/] :skull:"
    assert visible({"k": "\x1b\x9b"}) == '{"k": "\\u001b^[["}'  # not a string: its JSON, shown
    for cp in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        shown = visible(chr(cp))
        assert cp == 0x09 or all(0x20 <= ord(ch) < 0x7F for ch in shown), (cp, shown)


def test_json_output_is_exact_and_sends_no_control_character() -> None:
    doc = {"input": HOSTILE, "nested": [HOSTILE, {"ü": "\u2066x\u2069"}]}
    for indent in (None, 2):
        text = json_text(doc, indent)
        assert json.loads(text) == doc
        assert not any(
            ord(ch) < 0x20 and ch != "\n" or 0x7F <= ord(ch) <= 0x9F or ch in "\u202e\u2066\u2069" for ch in text
        )
        assert "ü" in text  # UTF-8 stays readable


def test_rich_never_reads_run_data_as_markup_or_styles_a_pipe() -> None:
    buf = io.StringIO()
    out = Out(buf)
    out.line("plain ", ("[bold red]not markup[/] :skull:", "bold"), " \x1b[31m")
    out.stream("streamed\r\ntext\x1b[2J")
    assert buf.getvalue() == "plain [bold red]not markup[/] :skull: ^[[31m\nstreamed\ntext^[[2J"
    out.row(["run_1", "a\tb", "x\x1by"])
    assert buf.getvalue().endswith("run_1\ta b\tx^[y\n")
    out.raw_lines('a,"b\x1b"\r\nc,"d\ne"\r\n')
    assert buf.getvalue().endswith('a,"b^["\r\nc,"d\ne"\r\n')


def test_countdowns_use_the_hubs_clock() -> None:
    assert [left_text(s) for s in (0, 9, 61, 600, 3599, 3600, 7322)] == [
        "0:00",
        "0:09",
        "1:01",
        "10:00",
        "59:59",
        "1:00:00",
        "2:02:02",
    ]
    clock = HubClock()
    hub_now = time.time() + 300  # the hub is five minutes ahead of this machine
    clock.from_date_header(formatdate(hub_now, usegmt=True))
    expires = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(int(hub_now) + 600))
    assert 598 <= clock.seconds_left(expires) <= 600  # by the local clock: 900; never more than its own 10 minutes
    assert clock.deadline(expires).startswith(("expires in 9:5", "expires in 10:0")) and clock.deadline(
        expires
    ).endswith(" UTC)")
    clock.from_iso(time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(int(hub_now) + 590)))  # a frame's `now` wins
    assert clock.exact and 9 <= clock.seconds_left(expires) <= 11
    clock.from_date_header(formatdate(hub_now, usegmt=True))  # and a later Date header does not undo it
    assert 9 <= clock.seconds_left(expires) <= 11
    assert clock.deadline("2000-01-01T00:00:00Z") == "expired" and clock.deadline(None) == ""
