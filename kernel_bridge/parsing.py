"""Turn streamed model text into events: prose, tags, code blocks, and the points to pause at.

The parser is incremental and lossless: ``"".join(e.raw for e in events)`` is the text fed (up to
a pause), each character is examined a bounded number of times, and only a possible marker is held
back.

Rules for the markdown profiles (``Profile.code == "fence"``), decided one line at a time:

- A python block opens with a line that is exactly ```` ```python ```` (or ``py``, ``python3``),
  after at most 3 spaces and before optional blanks, and closes with a line of at least as many
  backticks and nothing else but blanks. Closing is confirmed by the newline after it (or by
  ``finish()``).
- Any other fence line (```` ```bash ````, a bare ```` ``` ````, ```` ```` ````) opens a block of
  prose that ends at a fence line with at least as many backticks; nothing inside it is a marker.
- A line starting ```` ```output ```` outside any block is the model faking output: ``OutputStart``.
- Tags (``<think>``, ``</answer>``, ...) count anywhere in prose, but not inside a block.

Tag profiles (``code == "tag"``, e.g. ReTool) have no line rules: ``<code>`` … ``</code>`` and the
output tag count anywhere in prose, and a ```` ```python ```` fence just inside the code tags is
stripped from ``CodeEnd.code``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Literal, TypeAlias, cast

Section = Literal["text", "think", "answer"]
MarkupKind = Literal["think_open", "think_close", "answer_open", "answer_close"]

# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Prose in ``section``: ``think``, ``answer``, or ``text`` (outside both)."""

    section: Section
    raw: str


@dataclass(frozen=True, slots=True)
class Markup:
    """A think or answer tag; ``what`` names it, e.g. ``think_close``."""

    what: MarkupKind
    raw: str


@dataclass(frozen=True, slots=True)
class CodeStart:
    """The opening of a python block: the fence line with its newline, or the code tag."""

    section: Section
    language: str
    raw: str


@dataclass(frozen=True, slots=True)
class CodeDelta:
    """Code text as it streams, exactly as the model wrote it."""

    raw: str


@dataclass(frozen=True, slots=True)
class CodeEnd:
    """The end of a python block: ``code`` is the whole block; the Reasoner runs it iff ``runs``.

    ``raw`` is the closing fence line (or tag); an unterminated block reported by ``finish()`` has
    ``raw=""``, ``complete=False`` and ``runs=False``.
    """

    section: Section
    code: str
    runs: bool
    raw: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class OutputStart:
    """The model began to write its own output block; ``raw`` is the marker (```` ```output ````).

    The Reasoner cuts the model text before ``raw``: the marker and what follows are replaced.
    """

    raw: str


Event: TypeAlias = TextDelta | Markup | CodeStart | CodeDelta | CodeEnd | OutputStart


def normalize(events: Iterable[Event]) -> list[Event]:
    """Merge adjacent TextDelta of one section and adjacent CodeDelta.

    Different chunkings of one text split deltas differently; their normalized events are equal.
    """

    def merge_key(event: Event) -> tuple[str, str] | None:
        if isinstance(event, TextDelta):
            return ("text", event.section)
        return ("code", "") if isinstance(event, CodeDelta) else None

    merged: list[Event] = []
    for key, group in groupby(events, merge_key):
        if key is None:
            merged.extend(group)
        elif isinstance(first := next(group), TextDelta):
            merged.append(TextDelta(first.section, first.raw + "".join(e.raw for e in group)))
        else:
            merged.append(CodeDelta(first.raw + "".join(e.raw for e in group)))
    return merged


# ---------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class Profile:
    """How one family of models marks code, thinking, answers and tool output.

    ``code="fence"``: markdown blocks in ``languages``; ``code="tag"``: ``code_tags`` anywhere.
    Blocks run in thinking and before the final answer (``<answer>``, or all text after
    ``</think>``); blocks in the final answer run only with ``run_in_answer``.
    """

    name: str
    code: Literal["fence", "tag"] = "fence"
    languages: frozenset[str] = frozenset({"python", "py", "python3"})
    code_tags: tuple[str, str] = ("<code>", "</code>")
    think_tags: tuple[str, str] | None = ("<think>", "</think>")
    answer_tags: tuple[str, str] | None = ("<answer>", "</answer>")
    output_tags: tuple[str, str] = ("```output", "```")
    run_in_answer: bool = False

    def __post_init__(self) -> None:
        if self.code not in ("fence", "tag"):
            raise ValueError(f"Profile.code must be 'fence' or 'tag', not {self.code!r}")
        if self.code == "fence" and not re.fullmatch(r"```\w+", self.output_tags[0]):
            raise ValueError(
                f"a fence profile marks output with ```word, not {self.output_tags[0]!r}"
            )

    @property
    def stop(self) -> list[str]:
        """Stop strings for a sampler: the model must never write its own output block."""
        return [self.output_tags[0]]

    def format_output(self, text: str) -> str:
        """The block the Reasoner splices into the model text after a block ran."""
        return f"{self.output_tags[0]}\n{text}\n{self.output_tags[1]}\n"


MARKDOWN = Profile(name="markdown")
RETOOL = Profile(name="retool", code="tag", output_tags=("<interpreter>", "</interpreter>"))
PLAIN = Profile(name="plain", think_tags=None)
PROFILES: dict[str, Profile] = {p.name: p for p in (MARKDOWN, RETOOL, PLAIN)}


def opens_thinking(prompt: str, profile: Profile) -> bool:
    """Whether ``prompt`` (the text before the model's first token) leaves a think section open:
    its last think tag is an opening one, as in ``…<｜Assistant｜><think>\n``."""
    if profile.think_tags is None:
        return False
    open_tag, close_tag = profile.think_tags
    start = prompt.rfind(open_tag)
    return start >= 0 and prompt.find(close_tag, start) < 0


def template_start_section(
    tokenizer: Any, messages: list[dict[str, Any]], profile: Profile
) -> Section | None:
    """``"think"`` when the chat template's generation prompt opens a think section (reasoning
    models served raw: DeepSeek-R1 distills, QwQ, Qwen3 thinking checkpoints end it with
    ``<think>\n``), so that the parser starts inside it: the model's first words are thinking
    (in the spans, the cell, the terminal), not prose before an answer; else ``None``.

    The generation prompt is what ``add_generation_prompt=True`` adds to the rendered
    conversation; a tokenizer without a usable template gives ``None``.
    """
    if tokenizer is None or profile.think_tags is None:
        return None
    try:
        opened = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        closed = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
    except Exception:
        return None
    if not isinstance(opened, str) or not isinstance(closed, str):
        return None
    pairs = zip(opened, closed, strict=False)
    shared = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(opened), len(closed)))
    return "think" if opens_thinking(opened[shared:], profile) else None


def profile_from_template(tokenizer: Any) -> Profile:
    """The profile a model was trained to write, read from its chat template: ReTool-style
    checkpoints render tool results in ``<interpreter>`` tags, so their template names that
    tag; every other template (and a model without one, as behind an API) gets markdown fences,
    which all code models know. Think-first templates need no profile of their own: both
    profiles have think tags, and `template_start_section` starts the turn inside them."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates ({"default": …, "tool_use": …})
        template = "\n".join(t for t in template.values() if isinstance(t, str))
    if isinstance(template, str) and RETOOL.output_tags[0] in template:
        return RETOOL
    return MARKDOWN


def get_profile(name: str, tokenizer: Any = None) -> Profile:
    """The registered profile called ``name``, or for ``"auto"`` the one the chat template of
    ``tokenizer`` implies (`profile_from_template`); a ValueError lists the valid names."""
    if name == "auto":
        return profile_from_template(tokenizer)
    try:
        return PROFILES[name]
    except KeyError:
        names = ", ".join(["auto", *sorted(PROFILES)])
        raise ValueError(f"unknown profile {name!r}; choose one of: {names}") from None


# ---------------------------------------------------------------------------------------------
# The parser

# Where the parser is: prose, inside a non-python fence (prose too), or inside a python block.
_PROSE, _FENCED, _CODE = "prose", "fenced", "code"
# Phases of the line-head recognizer (fence profiles): indent, backticks, info word, blanks.
_SPACES, _TICKS, _WORD, _TRAIL = range(4)
# Its verdicts: still undecided, an ordinary line, or one of the fence lines.
_UNDECIDED, _NOT_MARKER, _OPEN, _OUTPUT, _FENCE, _CLOSE = range(6)
_BLANKS = " \t\r"
_TAG_SECTIONS: dict[str, Section] = {
    "think_open": "think",
    "think_close": "text",
    "answer_open": "answer",
    "answer_close": "text",
}


class StreamParser:
    """Incremental parser for one assistant turn; feed() text deltas, act on the events.

    A runnable ``CodeEnd`` or an ``OutputStart`` pauses the parser: the rest of that chunk is not
    consumed (it is kept in ``dropped``), and feed() returns ``[]`` and adds its text to ``dropped``
    until resume(), which continues at the start of a line in the same section.
    """

    def __init__(self, profile: Profile = MARKDOWN, start_section: Section | None = None) -> None:
        if start_section not in (None, "text", "think", "answer"):
            raise ValueError(f"start_section must be text, think or answer, not {start_section!r}")
        if start_section == "think" and profile.think_tags is None:
            raise ValueError(f"profile {profile.name!r} has no think tags; start_section='think'")
        self.profile = profile
        self._section: Section = start_section or "text"
        self._final = start_section == "answer"  # past </think> or <answer>: blocks do not run
        self._lines = profile.code == "fence"
        self._output_word = profile.output_tags[0][3:] if self._lines else ""  # "output"
        self._words = (*profile.languages, self._output_word)

        tags: dict[str, str] = {}
        if profile.think_tags:
            tags.update(zip(profile.think_tags, ("think_open", "think_close"), strict=True))
        if profile.answer_tags:
            tags.update(zip(profile.answer_tags, ("answer_open", "answer_close"), strict=True))
        if not self._lines:
            tags[profile.code_tags[0]] = "code_open"
            tags[profile.output_tags[0]] = "output_open"
        self._tags = tags
        self._max_tag = max(map(len, tags), default=0)
        stops = {t[0] for t in tags} | ({"\n"} if self._lines else set())
        self._prose_stop = re.compile("[" + re.escape("".join(sorted(stops))) + "]")

        self._mode = _PROSE
        self._carry = ""  # a possible partial tag, re-read with the next chunk (bounded)
        self._events: list[Event] = []
        self._pending: list[str] = []  # text or code not yet wrapped in an event
        self._pending_section: Section | None = None  # None: the pending text is code
        self._code: list[str] = []
        self._code_section: Section = "text"
        self._code_runs = False
        self._fence_len = 3
        self._paused = False
        self._finished = False
        self._dropped: list[str] = []
        self._new_line()

    # -- public API --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True after a runnable CodeEnd or an OutputStart, until resume()."""
        return self._paused

    @property
    def dropped(self) -> str:
        """Text fed but not consumed at the last pause (for diagnostics; kept after resume())."""
        return "".join(self._dropped)

    def feed(self, chunk: str) -> list[Event]:
        """Parse the next piece of model text; return the events it decided."""
        if self._finished:
            raise RuntimeError("feed() after finish(); start a new StreamParser for a new turn")
        if self._paused:
            self._dropped.append(chunk)
            return []
        text, self._carry = self._carry + chunk, ""
        i, n = 0, len(text)
        while i < n and not self._paused:
            i = self._step(text, i)
        if self._paused:
            self._dropped = [text[i:]]
        return self._take_events()

    def resume(self) -> None:
        """Continue after a pause, at the start of a line; the dropped text stays dropped."""
        if not self._paused:
            raise RuntimeError("resume() called but the parser is not paused")
        self._paused = False
        self._new_line()

    def finish(self) -> list[Event]:
        """End of the stream: flush held-back text and report an unterminated block.

        A closing fence without its newline still closes. An open block becomes
        ``CodeEnd(runs=False, complete=False)`` with the code so far. Nothing is held at a pause.
        """
        if self._finished:
            return []
        self._finished = True
        if not self._paused:
            if self._at_line_start:
                head = "".join(self._head_parts)
                if self._mode == _CODE and self._ticks >= self._fence_len:
                    self._close_code(head)
                else:
                    self._emit_content(head)
            self._emit_content(self._carry)
            self._carry = ""
            if self._mode == _CODE:
                self._close_code("", complete=False)
        self._paused = False
        return self._take_events()

    # -- emitting ----------------------------------------------------------------------------

    def _emit_text(self, raw: str) -> None:
        if self._pending_section != self._section:
            self._flush()
            self._pending_section = self._section
        self._pending.append(raw)

    def _emit_code(self, raw: str) -> None:
        if self._pending_section is not None:
            self._flush()
            self._pending_section = None
        self._pending.append(raw)
        self._code.append(raw)

    def _emit_content(self, raw: str) -> None:
        """Emit ``raw`` as whatever the current mode holds: code or prose."""
        if raw:
            (self._emit_code if self._mode == _CODE else self._emit_text)(raw)

    def _flush(self) -> None:
        if self._pending:
            raw = "".join(self._pending)
            section = self._pending_section
            self._events.append(CodeDelta(raw) if section is None else TextDelta(section, raw))
            self._pending = []

    def _push(self, event: Event) -> None:
        self._flush()
        self._events.append(event)

    def _take_events(self) -> list[Event]:
        self._flush()
        events, self._events = self._events, []
        return events

    # -- state changes -----------------------------------------------------------------------

    def _new_line(self) -> None:
        """At a line start a fence profile reads the line head before it emits anything."""
        self._at_line_start = self._lines
        self._phase, self._spaces, self._ticks, self._word = _SPACES, 0, 0, ""
        self._head_parts: list[str] = []

    def _runs_here(self) -> bool:
        if self._section == "think":
            return True
        return self.profile.run_in_answer or (self._section == "text" and not self._final)

    def _open_code(self, language: str, raw: str) -> None:
        self._push(CodeStart(self._section, language, raw))
        self._mode, self._fence_len, self._code = _CODE, 3, []
        self._code_section, self._code_runs = self._section, self._runs_here()

    def _close_code(self, raw: str, complete: bool = True) -> None:
        self._flush()
        code = "".join(self._code)
        if not self._lines:
            code = _strip_fence(code, self.profile.languages)
        runs = complete and self._code_runs
        self._push(CodeEnd(self._code_section, code, runs, raw, complete))
        self._mode, self._code = _PROSE, []
        self._paused = runs

    def _on_tag(self, what: str, raw: str) -> None:
        if what == "code_open":
            self._open_code("python", raw)
        elif what == "output_open":
            self._push(OutputStart(raw))
            self._paused = True
        else:
            self._push(Markup(cast(MarkupKind, what), raw))
            self._section = _TAG_SECTIONS[what]
            self._final = self._final or what in ("think_close", "answer_open")

    # -- scanning: each _scan_* consumes text from i and returns where it stopped -------------

    def _step(self, text: str, i: int) -> int:
        if self._at_line_start:
            return self._scan_line_head(text, i)
        if self._mode == _CODE:
            return self._scan_to_newline(text, i) if self._lines else self._scan_tag_code(text, i)
        if self._mode == _FENCED:
            return self._scan_to_newline(text, i)
        return self._scan_prose(text, i)

    def _scan_prose(self, text: str, i: int) -> int:
        match = self._prose_stop.search(text, i)
        if match is None:
            self._emit_text(text[i:])
            return len(text)
        j = match.start()
        if text[j] == "\n":
            self._emit_text(text[i : j + 1])
            self._new_line()
            return j + 1
        if j > i:
            self._emit_text(text[i:j])
        for tag, what in self._tags.items():
            if text.startswith(tag, j):
                self._on_tag(what, tag)
                return j + len(tag)
        tail = text[j:] if len(text) - j < self._max_tag else ""
        if tail and any(tag.startswith(tail) for tag in self._tags):
            self._carry = tail
            return len(text)
        self._emit_text(text[j])
        return j + 1

    def _scan_to_newline(self, text: str, i: int) -> int:
        j = text.find("\n", i)
        end = len(text) if j < 0 else j + 1
        self._emit_content(text[i:end])
        if j >= 0:
            self._new_line()
        return end

    def _scan_tag_code(self, text: str, i: int) -> int:
        close = self.profile.code_tags[1]
        j = text.find(close, i)
        if j >= 0:
            self._emit_content(text[i:j])
            self._close_code(close)
            return j + len(close)
        keep = _partial_suffix(text, i, close)
        self._emit_content(text[i : len(text) - keep])
        self._carry = text[len(text) - keep :]
        return len(text)

    def _scan_line_head(self, text: str, i: int) -> int:
        start = i
        while i < len(text):
            verdict = self._head_step(text[i])
            if verdict != _UNDECIDED:
                head = "".join(self._head_parts) + text[start:i]
                self._at_line_start = False
                return self._on_line_head(verdict, head + text[i], text, i)
            i += 1
        self._head_parts.append(text[start:])
        return i

    def _on_line_head(self, verdict: int, line: str, text: str, i: int) -> int:
        """Act on a decided line head; ``line`` is the head plus the deciding character."""
        if verdict == _NOT_MARKER:
            self._emit_content(line[:-1])
            return i
        if verdict == _FENCE:
            self._emit_text(line[:-1])
            self._mode, self._fence_len = _FENCED, self._ticks
            return i
        if verdict == _OPEN:
            self._open_code(self._word, line)
        elif verdict == _OUTPUT:
            self._push(OutputStart(line))
            self._paused = True
            return i + 1
        elif self._mode == _CODE:  # _CLOSE
            self._close_code(line)
        else:
            self._emit_text(line)
            self._mode = _PROSE
        self._new_line()
        return i + 1

    def _head_step(self, ch: str) -> int:
        """Read one more character of a line head (fence profiles) and judge the line if it can."""
        if self._phase == _SPACES:
            if ch == " " and self._spaces < 3:
                self._spaces += 1
                return _UNDECIDED
            if ch != "`":
                return _NOT_MARKER
            self._phase = _TICKS
        if self._phase == _TICKS:
            if ch == "`":
                self._ticks += 1
                return _UNDECIDED
            if self._ticks < (3 if self._mode == _PROSE else self._fence_len):
                return _NOT_MARKER
            self._phase = _WORD if self._mode == _PROSE else _TRAIL
        if self._phase == _WORD:  # only in prose: which fence is this?
            if ch == "\n" or ch in _BLANKS:
                if self._ticks != 3 or self._word not in self.profile.languages:
                    return _FENCE
                if ch == "\n":
                    return _OPEN
                self._phase = _TRAIL
                return _UNDECIDED
            word = self._word + ch
            if self._ticks == 3 and word == self._output_word:
                return _OUTPUT
            if self._ticks == 3 and any(w.startswith(word) for w in self._words):
                self._word = word
                return _UNDECIDED
            return _FENCE
        # _TRAIL: only blanks may follow, up to the newline
        if ch in _BLANKS:
            return _UNDECIDED
        if ch == "\n":
            return _OPEN if self._mode == _PROSE else _CLOSE
        return _FENCE if self._mode == _PROSE else _NOT_MARKER


def _strip_fence(content: str, languages: frozenset[str]) -> str:
    """Code inside a tag block, without the ```python fence a model may wrap it in."""
    first, newline, rest = content.lstrip().partition("\n")
    if not newline or not first.startswith("```") or first[3:].rstrip() not in languages:
        return content
    body = rest.rstrip()
    if body.endswith("```"):
        line_start = body.rfind("\n", 0, len(body) - 3) + 1
        if not body[line_start:-3].strip():
            return rest[:line_start]
    return rest


def _partial_suffix(text: str, start: int, marker: str) -> int:
    """Length of the longest proper prefix of ``marker`` that ``text[start:]`` ends with."""
    for k in range(min(len(marker) - 1, len(text) - start), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
