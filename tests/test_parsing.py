"""The stream parser: code-block protocol, chunking independence, pause and resume."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_bridge.parsing import (
    MARKDOWN,
    PLAIN,
    PROFILES,
    RETOOL,
    CodeDelta,
    CodeEnd,
    CodeStart,
    Event,
    Markup,
    OutputStart,
    Profile,
    Section,
    StreamParser,
    TextDelta,
    get_profile,
    normalize,
)


def parse_all(
    text: str,
    cuts: Iterable[int] = (),
    profile: Profile = MARKDOWN,
    start_section: Section | None = None,
) -> list[Event]:
    """Feed ``text`` split at ``cuts`` the way the Reasoner does, then finish().

    On a pause it resumes and the "model" goes on from what the events consumed, so the dropped
    text is fed again, split at the same absolute positions.
    """
    parser = StreamParser(profile, start_section)
    bounds = sorted({c for c in cuts if 0 < c < len(text)} | {len(text)})
    events: list[Event] = []
    consumed = resumed_at = 0  # consumed: the length of the raws so far
    while True:
        start = resumed_at
        for end in (b for b in bounds if b > resumed_at):
            new = parser.feed(text[start:end])
            events += new
            consumed += sum(len(e.raw) for e in new)
            if parser.paused:
                break
            start = end
        if not parser.paused:
            break
        assert consumed > resumed_at, "a pause must consume something"
        assert parser.dropped == text[consumed:end], "dropped is the unconsumed rest of the chunk"
        resumed_at = consumed
        parser.resume()
    return events + parser.finish()


def code_ends(events: Iterable[Event]) -> list[CodeEnd]:
    return [e for e in events if isinstance(e, CodeEnd)]


def raws(events: Iterable[Event]) -> str:
    return "".join(e.raw for e in events)


def feed_chars(parser: StreamParser, text: str) -> list[Event]:
    return [e for ch in text for e in parser.feed(ch)]


THINKING = (
    "<think>\nLet me check with code.\n```python\nx = 6 * 7\nprint(x)\n```\n"
    "Good, it is 42. 🎉\n</think>\n<answer>42</answer>"
)


# --- the basic protocol -------------------------------------------------------------------


def test_block_in_thinking_runs_and_pauses() -> None:
    parser = StreamParser()
    events = parser.feed(THINKING)
    assert parser.paused
    assert events == [
        Markup("think_open", "<think>"),
        TextDelta("think", "\nLet me check with code.\n"),
        CodeStart("think", "python", "```python\n"),
        CodeDelta("x = 6 * 7\nprint(x)\n"),
        CodeEnd("think", "x = 6 * 7\nprint(x)\n", True, "```\n"),
    ]
    assert parser.dropped == THINKING[len(raws(events)) :]


def test_one_char_at_a_time_matches_whole_text() -> None:
    whole = parse_all(THINKING)
    assert normalize(parse_all(THINKING, range(len(THINKING)))) == normalize(whole)
    assert [e.code for e in code_ends(whole)] == ["x = 6 * 7\nprint(x)\n"]


def test_fence_split_across_chunks_runs_once() -> None:
    text = "<think>\n```python\nprint(1)\n```\nafter"
    for cut in range(1, len(text)):
        ends = code_ends(parse_all(text, [cut]))
        assert ends == [CodeEnd("think", "print(1)\n", True, "```\n")], cut


def test_fence_sharing_a_chunk_with_text_pauses_and_keeps_the_rest_unconsumed() -> None:
    parser = StreamParser()
    assert parser.feed("I will compute.\n```py") == [TextDelta("text", "I will compute.\n")]
    events = parser.feed("thon\nprint(2)\n```\nThe result is 3 (a guess).\n```output\n3\n```\n")
    assert events[-1] == CodeEnd("text", "print(2)\n", True, "```\n")
    assert parser.paused
    assert parser.dropped == "The result is 3 (a guess).\n```output\n3\n```\n"


def test_backticks_inside_code_strings_do_not_close() -> None:
    text = '```python\ns = "```"\nt = """\n ``` not alone\n"""\nprint(s)\n```\n'
    (end,) = code_ends(parse_all(text))
    assert end.code == 's = "```"\nt = """\n ``` not alone\n"""\nprint(s)\n'
    assert end.runs


def test_fence_mid_line_does_not_close_or_open() -> None:
    events = parse_all("text ``` more\nsee ```python\nx = 1\n")
    assert normalize(events) == [TextDelta("text", "text ``` more\nsee ```python\nx = 1\n")]
    (end,) = code_ends(parse_all("```python\nx = 1 ``` 2\n```\n"))
    assert end.code == "x = 1 ``` 2\n"


def test_nested_fences_in_thinking_do_not_run() -> None:
    text = (
        "<think>\nThe format is:\n````markdown\n```python\nprint('example')\n```\n````\n"
        "```text\n```python\nnot code\n```\nNow for real:\n```python\nprint('real')\n```\n"
    )
    events = parse_all(text)
    assert [e.code for e in code_ends(events)] == ["print('real')\n"]
    assert "```python\nprint('example')\n" in raws(e for e in events if isinstance(e, TextDelta))


def test_other_language_fence_is_prose_in_the_current_section() -> None:
    events = normalize(parse_all("<think>\n```bash\nls -l\n```\n"))
    assert events == [
        Markup("think_open", "<think>"),
        TextDelta("think", "\n```bash\nls -l\n```\n"),
    ]


def test_longer_fence_needs_an_equally_long_close() -> None:
    events = parse_all("````\n```\n```python\nx\n````\n```python\ny\n```\n")
    assert [e.code for e in code_ends(events)] == ["y\n"]


def test_fence_may_be_indented_up_to_three_spaces() -> None:
    assert [e.code for e in code_ends(parse_all("   ```python\nx\n   ```  \n"))] == ["x\n"]
    assert code_ends(parse_all("    ```python\nx\n```\n")) == []


def test_opening_fence_must_be_exactly_python() -> None:
    for line in ("```pythonic", "``` python", "```python extra", "```Python", "````python"):
        assert code_ends(parse_all(f"{line}\nx\n```\n")) == [], line
    for line in ("```python", "```py", "```python3", "```python \t"):
        assert len(code_ends(parse_all(f"{line}\nx\n```\n"))) == 1, line


def test_crlf_line_endings() -> None:
    (end,) = code_ends(parse_all("```python\r\nx = 1\r\n```\r\n"))
    assert end.code == "x = 1\r\n" and end.raw == "```\r\n" and end.runs


def test_empty_block_is_reported_with_empty_code() -> None:
    parser = StreamParser()
    events = parser.feed("```python\n```\n")
    assert events[-1] == CodeEnd("text", "", True, "```\n")
    assert parser.paused


# --- sections -----------------------------------------------------------------------------


def test_block_in_answer_is_reported_but_not_run() -> None:
    parser = StreamParser()
    events = parser.feed("<answer>\nUse:\n```python\nprint('hi')\n```\n</answer>")
    assert not parser.paused
    starts = [e for e in events if isinstance(e, CodeStart)]
    assert starts == [CodeStart("answer", "python", "```python\n")]
    assert code_ends(events) == [CodeEnd("answer", "print('hi')\n", False, "```\n")]
    assert events[-1] == Markup("answer_close", "</answer>")


def test_run_in_answer_runs_blocks_in_the_answer() -> None:
    parser = StreamParser(dataclasses.replace(MARKDOWN, run_in_answer=True))
    events = parser.feed("<answer>\n```python\nprint('hi')\n```\nrest</answer>")
    assert code_ends(events) == [CodeEnd("answer", "print('hi')\n", True, "```\n")]
    assert parser.paused and parser.dropped == "rest</answer>"


def test_block_after_think_close_is_the_final_answer_and_does_not_run() -> None:
    events = parse_all("<think>\nok\n</think>\nFinal code:\n```python\nprint(1)\n```\n")
    assert code_ends(events) == [CodeEnd("text", "print(1)\n", False, "```\n")]


def test_block_before_any_think_tag_runs() -> None:
    (end,) = code_ends(parse_all("Let me try.\n```python\nprint(1)\n```\n"))
    assert end.section == "text" and end.runs


def test_forced_thinking_without_think_tag() -> None:
    parser = StreamParser(MARKDOWN, start_section="think")
    events = parser.feed("Hmm.\n```python\nprint(1)\n```\n")
    assert events[0] == TextDelta("think", "Hmm.\n")
    assert events[-1] == CodeEnd("think", "print(1)\n", True, "```\n")
    parser.resume()
    assert parser.feed("So 1.\n</think>\nIt is 1.") == [
        TextDelta("think", "So 1.\n"),
        Markup("think_close", "</think>"),
        TextDelta("text", "\nIt is 1."),
    ]


def test_forced_thinking_needs_a_profile_with_think_tags() -> None:
    with pytest.raises(ValueError, match="no think tags"):
        StreamParser(PLAIN, start_section="think")


def test_plain_profile_runs_blocks_before_the_answer() -> None:
    text = "<think> is just text here\n```python\nprint(1)\n```\n<answer>\n```python\nx\n```\n"
    events = parse_all(text, profile=PLAIN)
    assert [(e.section, e.runs) for e in code_ends(events)] == [("text", True), ("answer", False)]
    assert not any(isinstance(e, Markup) and e.what.startswith("think") for e in events)


# --- the model faking output --------------------------------------------------------------


def test_model_faking_output_pauses_with_output_start() -> None:
    parser = StreamParser()
    events = parser.feed("<think>\nThe output will be:\n```output\n42\n```\nso 42.")
    assert events[-1] == OutputStart("```output")
    assert parser.paused
    assert parser.dropped == "\n42\n```\nso 42."


def test_output_fence_inside_a_block_is_not_faked_output() -> None:
    events = parse_all("````markdown\n```output\n1\n```\n````\n")
    assert not any(isinstance(e, OutputStart) for e in events)


# --- end of stream ------------------------------------------------------------------------


def test_unterminated_block_at_finish() -> None:
    parser = StreamParser()
    parser.feed("<think>\n```python\nfor i in range(3):\n    print(i)\n  ")
    assert parser.finish() == [
        CodeDelta("  "),  # held back: a line starting with blanks may still be a fence
        CodeEnd("think", "for i in range(3):\n    print(i)\n  ", False, "", complete=False),
    ]


def test_closing_fence_without_newline_closes_at_finish() -> None:
    parser = StreamParser()
    parser.feed("```python\nprint(1)\n``")
    assert parser.feed("`") == []  # held: the line may still go on
    assert parser.finish() == [CodeEnd("text", "print(1)\n", True, "```")]
    assert not parser.paused


def test_finish_flushes_held_back_text() -> None:
    parser = StreamParser()
    assert parser.feed("a\n```pyth") == [TextDelta("text", "a\n")]
    assert parser.finish() == [TextDelta("text", "```pyth")]
    parser = StreamParser()
    assert parser.feed("a <thi") == [TextDelta("text", "a ")]
    assert parser.finish() == [TextDelta("text", "<thi")]


def test_feed_after_finish_raises() -> None:
    parser = StreamParser()
    parser.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        parser.feed("x")


# --- pause and resume ---------------------------------------------------------------------


def test_resume_continues_at_line_start_in_the_same_section() -> None:
    parser = StreamParser()
    parser.feed("<think>\n```python\nprint(1)\n```\nignored")
    parser.resume()
    assert parser.dropped == "ignored"  # kept for diagnostics until the next pause
    events = parser.feed("```python\nprint(2)\n```\n")
    assert events[0] == CodeStart("think", "python", "```python\n")
    assert events[-1] == CodeEnd("think", "print(2)\n", True, "```\n")


def test_feed_while_paused_is_dropped() -> None:
    parser = StreamParser()
    parser.feed("```python\n1\n```\nA")
    assert parser.feed("B") == []
    assert parser.dropped == "AB"
    parser.resume()
    assert parser.feed("C") == [TextDelta("text", "C")]


def test_resume_without_pause_raises() -> None:
    with pytest.raises(RuntimeError, match="not paused"):
        StreamParser().resume()


def test_finish_after_a_pause_returns_nothing() -> None:
    parser = StreamParser()
    parser.feed("```python\n1\n```\nrest")
    assert parser.finish() == []
    assert not parser.paused


# --- streaming and chunking ---------------------------------------------------------------


def test_prose_streams_immediately_and_holds_only_a_possible_marker() -> None:
    parser = StreamParser(start_section="think")
    assert [parser.feed(ch) for ch in "Hi <b>"] == [
        [TextDelta("think", "H")],
        [TextDelta("think", "i")],
        [TextDelta("think", " ")],
        [],  # "<" may start </think>
        [TextDelta("think", "<b")],
        [TextDelta("think", ">")],
    ]
    assert parser.feed("\n``") == [TextDelta("think", "\n")]  # a fence may follow
    assert parser.feed("x") == [TextDelta("think", "``x")]


def test_code_streams_line_by_line_heads_held_only_while_they_may_close() -> None:
    parser = StreamParser()
    parser.feed("```python\n")
    assert parser.feed("x = 1") == [CodeDelta("x = 1")]
    assert parser.feed("\n`") == [CodeDelta("\n")]
    assert parser.feed("x") == [CodeDelta("`x")]


def test_ten_thousand_tiny_chunks() -> None:
    block = "<think>\n" + "".join(f"step {i}\n```python\nprint({i})\n```\n" for i in range(600))
    rng = random.Random(7)
    cuts = rng.sample(range(1, len(block)), 10_000)
    events = parse_all(block, cuts)
    assert [e.code for e in code_ends(events)] == [f"print({i})\n" for i in range(600)]
    assert normalize(events) == normalize(parse_all(block))
    assert raws(events) == block


def test_emoji_split_across_chunks() -> None:
    text = "<think>\nПривет 🙂👍🏽 — 数学\n```python\nprint('🐍' * 3)  # ✓\n```\n✅ done</think>"
    whole = normalize(parse_all(text))
    assert normalize(parse_all(text, range(len(text)))) == whole
    rng = random.Random(3)
    for _ in range(50):
        cuts = rng.sample(range(1, len(text)), rng.randint(1, 20))
        assert normalize(parse_all(text, cuts)) == whole
    assert code_ends(whole)[0].code == "print('🐍' * 3)  # ✓\n"


def test_lossless_raw_join() -> None:
    text = THINKING + "\n```python\nunterminated"
    assert raws(parse_all(text)) == text
    assert raws(parse_all(text, range(len(text)))) == text


def test_normalize_merges_adjacent_deltas_only() -> None:
    events: list[Event] = [
        TextDelta("think", "a"),
        TextDelta("think", "b"),
        TextDelta("text", "c"),
        CodeDelta("d"),
        CodeDelta("e"),
        Markup("think_open", "<think>"),
        TextDelta("think", "f"),
    ]
    assert normalize(events) == [
        TextDelta("think", "ab"),
        TextDelta("text", "c"),
        CodeDelta("de"),
        Markup("think_open", "<think>"),
        TextDelta("think", "f"),
    ]


# --- ReTool-style tags --------------------------------------------------------------------


def test_retool_code_tag_mid_line_with_inner_fence() -> None:
    parser = StreamParser(RETOOL)
    events = parser.feed("Compute: <code>```python\nprint(1)\n```</code>\n<interpreter>")
    assert events == [
        TextDelta("text", "Compute: "),
        CodeStart("text", "python", "<code>"),
        CodeDelta("```python\nprint(1)\n```"),
        CodeEnd("text", "print(1)\n", True, "</code>"),
    ]
    assert parser.paused and parser.dropped == "\n<interpreter>"


def test_retool_plain_code_tag() -> None:
    (end,) = code_ends(parse_all("<think>x <code>print(1)</code> y", profile=RETOOL))
    assert end == CodeEnd("think", "print(1)", True, "</code>")


def test_retool_tags_split_across_chunks() -> None:
    text = "<think>a<code>\n```python\nprint('</c')\n```\n</code>b</think>"
    whole = normalize(parse_all(text, profile=RETOOL))
    assert code_ends(whole)[0].code == "print('</c')\n"
    assert normalize(parse_all(text, range(len(text)), profile=RETOOL)) == whole


def test_retool_interpreter_tag_is_faked_output() -> None:
    parser = StreamParser(RETOOL)
    assert parser.feed("so <interpreter>9</interpreter>")[-1] == OutputStart("<interpreter>")
    assert parser.paused and parser.dropped == "9</interpreter>"


def test_retool_fences_outside_code_tags_are_prose() -> None:
    assert code_ends(parse_all("```python\nprint(1)\n```\n", profile=RETOOL)) == []


# --- profiles -----------------------------------------------------------------------------


def test_profile_registry_and_unknown_name() -> None:
    assert get_profile("markdown") is MARKDOWN
    assert {name: p.name for name, p in PROFILES.items()} == {
        "markdown": "markdown",
        "retool": "retool",
        "plain": "plain",
    }
    with pytest.raises(ValueError, match="markdown, plain, retool"):
        get_profile("qwen")


def test_format_output_and_stop_strings() -> None:
    assert MARKDOWN.format_output("42") == "```output\n42\n```\n"
    assert RETOOL.format_output("42") == "<interpreter>\n42\n</interpreter>\n"
    assert MARKDOWN.stop == PLAIN.stop == ["```output"]
    assert RETOOL.stop == ["<interpreter>"]


def test_spliced_output_is_not_mistaken_for_model_text() -> None:
    # The Reasoner feeds only model text; after the splice the model goes on at a line start.
    parser = StreamParser(start_section="think")
    parser.feed("```python\nprint(1)\n```\n")
    parser.resume()
    assert parser.feed("```python\nprint(2)\n```\n")[-1].raw == "```\n"


# --- properties ---------------------------------------------------------------------------

FRAGMENTS = [
    "Let me think. ",
    "x",
    " ",
    "\n",
    "\r\n",
    "\t",
    "<",
    "<b>",
    "<thi",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<code>",
    "</code>",
    "</c",
    "<interpreter>",
    "`",
    "``",
    "```",
    "```\n",
    "  ```\n",
    "````\n",
    "```python\n",
    "```py  \n",
    "```python3\n",
    "```pythonic\n",
    "```bash\n",
    "````markdown\n",
    "```output\n",
    'print("```")\n',
    "x = 1  # ``` mid-line\n",
    "    indented()\n",
    "é🙂👍🏽数",
]

CODE_LINES = [
    "x = 1\n",
    's = "```"\n',
    "  ``` not a close\n",
    "print('</c', '<think>')\n",
    "```py\n",
]
blocks = st.tuples(
    st.sampled_from(["```python\n", "```py  \n", "  ```python3\n", "<code>", "<code>```python\n"]),
    st.lists(st.sampled_from(CODE_LINES), max_size=4).map("".join),
    st.sampled_from(["```\n", "```", "  ``` \n", "````\n", "</code>", "```\n</code>"]),
).map("".join)
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), blocks), max_size=30).map("".join)
setups = st.sampled_from(
    [(MARKDOWN, None), (MARKDOWN, "think"), (PLAIN, None), (RETOOL, None), (RETOOL, "think")]
)


@settings(max_examples=300, deadline=None)
@given(text=texts, data=st.data(), setup=setups)
def test_any_chunking_gives_the_same_events(
    text: str, data: st.DataObject, setup: tuple[Profile, Section | None]
) -> None:
    profile, start = setup
    cuts = data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=30))
    whole = parse_all(text, (), profile, start)
    chunked = parse_all(text, cuts, profile, start)
    assert normalize(chunked) == normalize(whole)
    assert raws(chunked) == raws(whole) == text


@settings(max_examples=100, deadline=None)
@given(text=texts, setup=setups)
def test_char_by_char_gives_the_same_events(
    text: str, setup: tuple[Profile, Section | None]
) -> None:
    profile, start = setup
    whole = parse_all(text, (), profile, start)
    assert normalize(parse_all(text, range(len(text)), profile, start)) == normalize(whole)


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_markdown_code_is_exactly_the_streamed_code_deltas(text: str) -> None:
    events = parse_all(text)
    code: list[str] | None = None
    for event in events:
        if isinstance(event, CodeStart):
            code = []
        elif isinstance(event, CodeDelta):
            assert code is not None
            code.append(event.raw)
        elif isinstance(event, CodeEnd):
            assert code is not None and event.code == "".join(code)
            assert event.complete or not event.runs
            code = None
