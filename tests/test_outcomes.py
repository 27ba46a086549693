"""Outcomes that tell the truth: only a model that ended its turn with an answer has one, and the
training rewards read the outcome, not leftover text (issue 15, item 6)."""

from __future__ import annotations

from kernel_bridge.trace import Segment, Span, Trace
from kernel_bridge.training.rewards import answer_format, correct
from kernel_bridge.training.tasks import Task

TASK = Task(id="t", question="2 + 2?", answer="4")


def trace(finish_reason: str, answer: str | None) -> Trace:
    text = "<think>\nI think it is 4</think>\n<answer>4</answer>"
    spans = [
        Span("markup", 0, 8),
        Span("think", 8, 23),
        Span("markup", 23, 40),
        Span("answer", 40, 41),
        Span("markup", 41, 50),
    ]
    return Trace(
        model="m",
        sampler={"name": "scripted"},
        messages=[{"role": "user", "content": "2 + 2?"}],
        segments=[Segment(kind="model", text=text, spans=spans)],
        answer=answer,
        finish_reason=finish_reason,  # type: ignore[arg-type]
    )


def test_an_answer_the_model_gave_earns_the_rewards():
    assert correct(trace("answer", "4"), TASK) == 1.0
    assert answer_format(trace("answer", "4"), TASK) == 1.0


def test_a_run_without_an_answer_earns_no_answer_reward():
    for reason in ("no_answer", "interrupted", "max_tokens", "max_steps", "time_limit", "error"):
        # Older traces of a stopped run kept the cut-off text as the answer: it is still none.
        assert correct(trace(reason, "4"), TASK) == 0.0, reason
        assert answer_format(trace(reason, "4"), TASK) == 0.0, reason
    assert correct(trace("answer", None), TASK) == 0.0  # "answered" with nothing: older traces


def test_no_answer_round_trips_through_json():
    again = Trace.from_json(trace("no_answer", None).to_json())
    assert (again.finish_reason, again.answer) == ("no_answer", None)
