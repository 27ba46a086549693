"""The reasoning loop: sample → complete block → execute → splice the real output → resume.

``Reasoner.stream()`` yields every event (the parser's and its own) as it happens, for front ends;
``Reasoner.run()`` returns the finished ``Trace``. Whatever ends a run (an answer, a limit, an
error, a cancel), the trace is completed with its ``finish_reason`` and saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from kernel_bridge import settings
from kernel_bridge.execution import ExecutionResult, Executor, Kernel, OutputCollector
from kernel_bridge.parsing import (
    CodeDelta,
    CodeEnd,
    CodeStart,
    Event,
    Markup,
    OutputStart,
    Profile,
    StreamParser,
    TextDelta,
    get_profile,
    template_start_section,
)
from kernel_bridge.prompts import default_examples, default_system_prompt
from kernel_bridge.samplers import Delta, Sampler, SampleRequest
from kernel_bridge.settings import check_count, check_seconds
from kernel_bridge.tools import Toolbox
from kernel_bridge.trace import Segment, Span, Step, Trace, TraceStore, fallback_path

NO_OUTPUT = "[no output]"
NO_CODE_RAN = "[no code ran: output appears only after a ```python block]"
STOPPED_NOTE = "[interrupted: the run was stopped while this block ran]"


@dataclass
class Limits:
    """When a run stops even without an answer; each limit has its own finish_reason.

    The defaults are ``kernel_bridge.settings``' (the CLI's and the magic's too).
    """

    max_steps: int = settings.MAX_STEPS
    max_tokens: int = settings.MAX_TOKENS
    step_timeout: float = settings.STEP_TIMEOUT
    time_limit: float = settings.TIME_LIMIT

    def __post_init__(self) -> None:
        self.max_steps = check_count(self.max_steps, "Limits.max_steps")
        self.max_tokens = check_count(self.max_tokens, "Limits.max_tokens")
        self.step_timeout = check_seconds(self.step_timeout, "Limits.step_timeout")
        self.time_limit = check_seconds(self.time_limit, "Limits.time_limit")


# -- events the Reasoner adds to the parser's ---------------------------------------------------


@dataclass(frozen=True)
class RunStarted:
    trace: Trace


@dataclass(frozen=True)
class StepStarted:
    index: int
    code: str


@dataclass(frozen=True)
class StepOutput:
    """One output of a running step (an nbformat output), as soon as the kernel sends it."""

    index: int
    output: NotebookNode


@dataclass(frozen=True)
class StepFinished:
    """A step is done; ``text`` is exactly what was spliced into the assistant turn."""

    step: Step
    text: str


@dataclass(frozen=True)
class RunFinished:
    """The run ended. ``saved_to``: the file that holds its trace (the store's, or a fallback
    file when the store could not be written; None without a store, or if neither could be
    written); ``save_error``: why not the store's. As the ``Reasoner``'s attributes of the same
    names."""

    trace: Trace
    saved_to: Path | None = None
    save_error: str | None = None


ReasonerEvent = Event | RunStarted | StepStarted | StepOutput | StepFinished | RunFinished


class Reasoner:
    """Runs a sampler's thinking with a live kernel.

    ``kernel`` defaults to a fresh local ``Kernel`` started on first use and shut down by
    ``close()``; a kernel passed in is left running (its state is the caller's). Any ``Executor``
    works in its place, e.g. ``ShellExecutor`` (the notebook's own namespace). The prompt is
    ``system_prompt`` and the worked ``examples`` (defaults from ``kernel_bridge.prompts``), then
    the question.

    ``tools`` (a ``Toolbox``, ``toolset(...)``, or a list of tools and functions) are installed into
    the kernel before the first block and described in the system prompt; ``authorized_imports``
    limits what the model's code may import (a guard, not a sandbox).
    """

    def __init__(
        self,
        sampler: Sampler,
        kernel: Executor | None = None,
        *,
        profile: Profile | str = "auto",
        limits: Limits | None = None,
        system_prompt: str | None = None,
        examples: list[dict[str, Any]] | None = None,
        store: TraceStore | str | os.PathLike[str] | None = None,
        start_section: str | None = None,
        tools: Toolbox | Iterable[Any] | None = None,
        authorized_imports: Iterable[str] | None = None,
        sandbox: bool = False,
    ) -> None:
        self.sampler = sampler
        self.tools = Toolbox.of(tools, authorized_imports)
        self.profile = (
            get_profile(profile, getattr(sampler, "tokenizer", None))
            if isinstance(profile, str)
            else profile
        )
        self.limits = limits or Limits()
        self.system_prompt = (
            default_system_prompt(self.profile) if system_prompt is None else system_prompt
        )
        if self.tools:
            self.system_prompt = "\n\n".join(
                p for p in (self.system_prompt, self.tools.prompt()) if p
            )
        self.examples = default_examples(self.profile) if examples is None else examples
        self.store = TraceStore(store) if isinstance(store, (str, os.PathLike)) else store
        self.start_section = start_section
        self._kernel: Executor | None = kernel
        self._owns_kernel = kernel is None
        self.sandbox = sandbox  # for the kernel started here; a kernel passed in is as it is
        self._tools_in: Executor | None = None
        self.trace: Trace | None = None
        # Where the last run's trace was saved, and why not in ``store`` if it went elsewhere.
        self.saved_to: Path | None = None
        self.save_error: str | None = None

    @property
    def save_problem(self) -> str | None:
        """One line saying that the last run's store could not be written, why, and where the
        trace went instead; None when it was saved where asked (or there is no store)."""
        if self.save_error is None:
            return None
        instead = f"; saved it to {self.saved_to} instead" if self.saved_to else ""
        return self.save_error + instead

    async def kernel(self) -> Executor:
        if self._kernel is None:
            self._kernel = Kernel(timeout=self.limits.step_timeout, sandbox=self.sandbox)
        if not self._kernel.started:
            await self._kernel.start()
        if self.tools and self._tools_in is not self._kernel:
            await self.tools.install(self._kernel)
            self._tools_in = self._kernel
        return self._kernel

    async def close(self) -> None:
        if self._owns_kernel and isinstance(self._kernel, Kernel):
            await self._kernel.shutdown()
            self._kernel = None

    async def __aenter__(self) -> Reasoner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def messages_for(self, question: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(question, str):
            if not question.strip():
                raise ValueError("the question is empty: ask something")
            messages = [{"role": "user", "content": question}]
        else:
            messages = [dict(m) for m in question]
        if any(m.get("role") == "system" for m in messages):
            return messages  # the caller wrote the whole prompt
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, *(dict(m) for m in self.examples), *messages]

    async def run(self, question: str | list[dict[str, Any]]) -> Trace:
        """Run to the end and return the trace (also in ``self.trace`` if cancelled)."""
        trace = None
        async for event in self.stream(question):  # to the end: a cancel is re-raised after
            if isinstance(event, RunFinished):
                trace = event.trace
        assert trace is not None, "stream() ended without RunFinished"
        return trace

    async def stream(
        self, question: str | list[dict[str, Any]], *, trace_id: str | None = None
    ) -> AsyncIterator[ReasonerEvent]:
        """Yield every event of one run; the last one is ``RunFinished`` with the saved trace.

        ``trace_id``: the id the trace takes (a front end that showed the run before it began,
        while the model loaded); None: a new one.

        A cancel (Ctrl-C, the Stop button) still ends the stream as a run ends, so every front
        end shows the same record: the stopped block's ``StepFinished`` (with what it printed),
        then ``RunFinished`` of the ``interrupted`` trace; then the cancel is re-raised.
        """
        run = _Run(self, self.messages_for(question), trace_id)
        self.trace = run.trace
        self.saved_to = self.save_error = None
        yield RunStarted(run.trace)
        try:
            async for event in run.events():
                yield event
        except (asyncio.CancelledError, KeyboardInterrupt):
            run.finish("interrupted")
            run.save()
            if run.stopped_step is not None:
                yield run.stopped_step
            yield RunFinished(run.trace, self.saved_to, self.save_error)
            raise
        except Exception as e:  # the sampler or the kernel failed: keep the trace
            run.finish("error", error=f"{type(e).__name__}: {e}")
        finally:
            run.finish("interrupted")  # a no-op when the run has already finished
            run.save()
        yield RunFinished(run.trace, self.saved_to, self.save_error)


class _Run:
    """The state of one run: the trace being built, the parser, the current model segment."""

    def __init__(
        self, reasoner: Reasoner, messages: list[dict[str, Any]], trace_id: str | None = None
    ) -> None:
        self.r = reasoner
        self.limits = reasoner.limits
        sampler = reasoner.sampler
        self.trace = Trace(
            id=trace_id or uuid.uuid4().hex,
            model=getattr(sampler, "name", type(sampler).__name__),
            sampler={"name": type(sampler).__name__, "params": sampler.params()},
            messages=messages,
            profile=reasoner.profile.name,
        )
        prompt_ids = getattr(sampler, "prompt_ids", None)  # local samplers know their prompt ids
        if prompt_ids is not None:
            self.trace.prompt_token_ids = list(prompt_ids(messages))
            self.trace.usage.prompt_tokens = len(self.trace.prompt_token_ids)
        start = reasoner.start_section or template_start_section(
            getattr(sampler, "tokenizer", None), messages, reasoner.profile
        )  # a local chat template that opens <think> starts the turn inside it
        self.parser = StreamParser(reasoner.profile, start_section=start)  # type: ignore[arg-type]
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.limits.time_limit
        self.segment = _SegmentBuilder()
        self.answer_parts: list[str] = []
        self.tail_text: list[str] = []
        self.code_in_answer = False
        self.finished = False
        self.sample_time = 0.0
        self.sample_end = "stop"  # why the last sampler call ended: stop, length or time_limit
        self.stopped_step: StepFinished | None = None  # the block a cancel stopped, recorded
        self.saved = False

    # -- the loop -----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ReasonerEvent]:
        kernel = await self.r.kernel()
        while True:
            if time.monotonic() >= self.deadline:
                self.finish("time_limit")
                return
            pause: Event | None = None
            async for event in self._sample():
                yield event
                if isinstance(event, (CodeEnd, OutputStart)) and self.parser.paused:
                    pause = event
            if pause is None:
                if self.sample_end == "time_limit":
                    self.finish("time_limit")
                    return
                for event in self.parser.finish():
                    self._record(event)
                    yield event
                self._close_model_segment()
                self.finish("max_tokens" if self.sample_end == "length" else "answer")
                return
            if isinstance(pause, OutputStart):
                self._close_model_segment()
                self._add_tool_segment(self.r.profile.format_output(NO_CODE_RAN))
            else:
                assert isinstance(pause, CodeEnd)
                if len(self.trace.steps) >= self.limits.max_steps:
                    self.finish("max_steps")
                    return
                self.segment.link_step(len(self.trace.steps))
                self._close_model_segment()
                async for step_event in self._execute(kernel, pause.code):
                    yield step_event
            self.parser.resume()

    async def _sample(self) -> AsyncIterator[Event]:
        """Stream one sampler call through the parser; ``sample_end`` says why it ended."""
        self.sample_end = "stop"
        remaining = self.limits.max_tokens - self.trace.usage.model_tokens
        if remaining <= 0:
            self.sample_end = "length"
            return
        request = SampleRequest(
            messages=self.trace.messages,
            segments=[*self.trace.segments],
            stop=self.r.profile.stop,
            max_tokens=remaining,
        )
        stream = self.r.sampler.stream(request)
        t = time.monotonic()
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                    # arrives as a delta lands, and the run would not stop.
                    async with asyncio.timeout(max(self.deadline - time.monotonic(), 0.001)):
                        delta = await anext(stream)  # type: ignore[call-overload]
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.sample_end = "time_limit"
                    return
                for event in self._take(delta):
                    yield event
                if self.parser.paused:
                    return
                if delta.finish_reason is not None:
                    self.sample_end = delta.finish_reason
                    return
        finally:
            self.sample_time += time.monotonic() - t
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    def _take(self, delta: Delta) -> list[Event]:
        """Feed one delta to the parser and record what it accepted into the model segment."""
        events = self.parser.feed(delta.text)
        cut = len(self.parser.dropped) if self.parser.paused else 0
        if any(isinstance(e, OutputStart) for e in events):
            cut = len(delta.text)  # the marker is cut too; so are its (partial) tokens
        if cut:
            # A delta cut at a pause: its ids cover text that was dropped, so they cannot be kept.
            self.segment.drop_tokens()
        else:
            self.segment.add_tokens(delta)
        self.trace.usage.model_tokens += self._count_tokens(delta, len(delta.text) - cut)
        for event in events:
            self._record(event)
        return events

    def _count_tokens(self, delta: Delta, accepted: int) -> int:
        if delta.token_ids is not None:
            return len(delta.token_ids)
        return self._estimate_tokens(delta.text[:accepted])

    def _estimate_tokens(self, text: str) -> int:
        """The sampler's own count where it has one, else characters ÷ 4."""
        if not text:
            return 0
        counter = getattr(self.r.sampler, "count_tokens", None)
        return counter(text) if counter else max(1, len(text) // 4)

    def _record(self, event: Event) -> None:
        """Keep the accepted text, its spans, and what belongs to the answer."""
        if isinstance(event, OutputStart):
            return  # cut: the marker and what follows are replaced
        if isinstance(event, TextDelta):
            self.segment.add(event.section, event.raw)
            if event.section == "answer":
                self.answer_parts.append(event.raw)
            elif event.section == "text":
                self.tail_text.append(event.raw)
            return
        if isinstance(event, CodeStart):
            self.code_in_answer = event.section == "answer"
        if self.code_in_answer and isinstance(event, (CodeStart, CodeDelta, CodeEnd)):
            self.answer_parts.append(event.raw)  # a block in the answer is part of the answer
        if isinstance(event, CodeDelta):
            self.segment.add("code", event.raw)
            return
        if isinstance(event, CodeEnd):
            self.segment.end_code()
        self.segment.add("markup", event.raw)
        if isinstance(event, (CodeStart, CodeEnd)) or (
            isinstance(event, Markup) and event.what == "think_close"
        ):
            self.tail_text.clear()

    async def _execute(self, kernel: Executor, code: str) -> AsyncIterator[ReasonerEvent]:
        index = len(self.trace.steps)
        yield StepStarted(index, code)
        queue: asyncio.Queue[NotebookNode] = asyncio.Queue()
        # What the front ends were shown, kept (bounded by the same caps) for a stopped step.
        shown = OutputCollector(getattr(kernel, "output_limits", None))

        def on_output(output: NotebookNode) -> None:
            content = {key: value for key, value in output.items() if key != "output_type"}
            shown.handle({"header": {"msg_type": output["output_type"]}, "content": content})
            queue.put_nowait(output)

        timeout = min(self.limits.step_timeout, max(self.deadline - time.monotonic(), 0.5))
        t0, started = time.monotonic(), time.time()
        task = asyncio.create_task(kernel.execute(code, timeout=timeout, on_output=on_output))
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield StepOutput(index, getter.result())
                else:
                    getter.cancel()
            result: ExecutionResult = task.result()
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Stopped mid-block (Ctrl-C, the Stop button): keep the step and what it printed.
            result = _stopped_result(shown, started, time.monotonic() - t0)
            self.stopped_step = StepFinished(*self._add_step(index, code, result))
            raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        step, text = self._add_step(index, code, result)
        self.save(checkpoint=True)
        yield StepFinished(step, text)

    def _add_step(self, index: int, code: str, result: ExecutionResult) -> tuple[Step, str]:
        """Record a step and splice its output into the assistant turn."""
        step = Step.from_result(index, code, result)
        self.trace.steps.append(step)
        text = self.r.profile.format_output(result.output_text or NO_OUTPUT)
        self._add_tool_segment(text)
        return step, text

    # -- segments -----------------------------------------------------------------------------

    def _close_model_segment(self) -> None:
        if self.segment.empty:
            return
        self.trace.segments.append(self.segment.build())
        self.segment = _SegmentBuilder()

    def _add_tool_segment(self, text: str) -> None:
        encode = getattr(self.r.sampler, "encode", None)
        ids = encode(text) if encode else None
        self.trace.segments.append(Segment(kind="tool", text=text, token_ids=ids))
        self.trace.usage.tool_tokens += len(ids) if ids is not None else self._estimate_tokens(text)

    # -- ending -------------------------------------------------------------------------------

    def finish(self, reason: str, error: str | None = None) -> None:
        """End the trace. Only a model that ended its turn gave an answer: a turn that ended with
        nothing after its last block is ``no_answer``; a run cut short (a limit, a stop, an
        error) keeps no answer, since what it wrote last is unfinished thinking."""
        if self.finished:
            return
        self.finished = True
        self._close_model_segment()
        trace = self.trace
        answer = "".join(self.answer_parts).strip() or "".join(self.tail_text).strip()
        if reason == "answer" and not answer:
            reason = "no_answer"
        trace.finish_reason = reason  # type: ignore[assignment]
        trace.error = error
        trace.answer = answer if reason == "answer" and answer else None
        trace.timings = {
            "total_s": time.monotonic() - self.t0,
            "sampling_s": self.sample_time,
            "kernel_s": sum(s.duration_s for s in trace.steps),
        }

    def save(self, checkpoint: bool = False) -> None:
        """Checkpoint or append the trace (the finished one once). A store that cannot be written
        (a full disk) never stops the run: checkpoints are skipped, and the finished trace goes
        to a fallback file (``Reasoner.saved_to`` and ``save_error`` say where, and why)."""
        store = self.r.store
        if store is None or self.saved:
            return
        self.saved = not checkpoint
        try:
            if checkpoint:
                store.checkpoint(self.trace)
            else:
                store.append(self.trace)
                self.r.saved_to = store.path
            return
        except OSError as e:
            self.r.save_error = f"cannot write the trace to {store.path}: {e.strerror or e}"
        if checkpoint:
            return
        with contextlib.suppress(OSError):  # a stale checkpoint would show as interrupted
            store.discard_checkpoint(self.trace.id)
        fallback = TraceStore(fallback_path(self.trace.id))
        try:
            fallback.append(self.trace)
        except OSError as e:
            self.r.save_error += f"; nor to {fallback.path}: {e.strerror or e}"
        else:
            self.r.saved_to = fallback.path


def _stopped_result(shown: OutputCollector, started: float, duration: float) -> ExecutionResult:
    """A step stopped from outside (Ctrl-C, the Stop button): what it had shown, and a note."""
    text = str(shown.text).rstrip("\n")
    return ExecutionResult(
        status="error",
        output_text=f"{text}\n{STOPPED_NOTE}" if text.strip() else STOPPED_NOTE,
        outputs=shown.outputs,
        execution_count=shown.execution_count,
        started=started,
        duration_s=duration,
    )


class _SegmentBuilder:
    """Accumulates the model text of one segment with its spans and token ids."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0
        self.token_ids: list[int] | None = []
        self.logprobs: list[float] | None = []
        self.last_code_span: int | None = None

    @property
    def empty(self) -> bool:
        return self.length == 0

    def add(self, kind: str, raw: str) -> None:
        if not raw:
            return
        end = self.length + len(raw)
        last = self.spans[-1] if self.spans else None
        if last is not None and last.kind == kind and kind != "markup":
            self.spans[-1] = Span(kind, last.start, end)  # type: ignore[arg-type]
        else:
            self.spans.append(Span(kind, self.length, end))  # type: ignore[arg-type]
        self.parts.append(raw)
        self.length = end

    def end_code(self) -> None:
        """A block closes: remember its code span (none for an empty block) to link a step to."""
        has_code = bool(self.spans) and self.spans[-1].kind == "code"
        self.last_code_span = len(self.spans) - 1 if has_code else None

    def link_step(self, index: int) -> None:
        """The block that just closed runs as step ``index``."""
        if self.last_code_span is not None:
            span = self.spans[self.last_code_span]
            self.spans[self.last_code_span] = Span("code", span.start, span.end, step=index)

    def add_tokens(self, delta: Delta) -> None:
        if delta.token_ids is None:
            if delta.text:
                self.drop_tokens()
            return
        if self.token_ids is not None:
            self.token_ids.extend(delta.token_ids)
        if self.logprobs is not None:
            if delta.logprobs is not None and len(delta.logprobs) == len(delta.token_ids):
                self.logprobs.extend(delta.logprobs)
            else:
                self.logprobs = None

    def drop_tokens(self) -> None:
        """The ids would no longer match the text; the training view then encodes the text."""
        self.token_ids = None
        self.logprobs = None

    def build(self) -> Segment:
        ids = self.token_ids or None
        logprobs = self.logprobs if ids is not None and self.logprobs else None
        return Segment(
            kind="model",
            text="".join(self.parts),
            token_ids=ids,
            logprobs=logprobs,
            spans=list(self.spans),
        )
