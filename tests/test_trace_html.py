"""A finished run as HTML: what a notebook viewer without the extension shows of a %%reason cell
(issue 15, item 3)."""

from __future__ import annotations

from kernel_bridge.events import trace_html
from kernel_bridge.trace import Segment, Span, Step, Trace

PNG = "iVBORw0KGgo="


def make_trace() -> Trace:
    text = "<think>\nPlot x < 3.\n```python\nplot()\n```\n"
    spans = [
        Span("markup", 0, 8),
        Span("think", 8, 20),
        Span("markup", 20, 30),
        Span("code", 30, 37, step=0),
        Span("markup", 37, 41),
    ]
    step = Step(
        index=0,
        code="plot()\n",
        status="ok",
        output_text="drawn",
        outputs=[
            {"output_type": "stream", "name": "stdout", "text": "drawn\n"},
            {"output_type": "display_data", "data": {"image/png": PNG}, "metadata": {}},
            {
                "output_type": "error",
                "ename": "E",
                "evalue": "x",
                "traceback": ["\x1b[31mE\x1b[0m: x"],
            },
        ],
        execution_count=None,
        started=0.0,
        duration_s=0.5,
        new_files=[],
    )
    last = "</think>\n<answer>Done.</answer>"
    last_spans = [Span("markup", 0, 17), Span("answer", 17, 22), Span("markup", 22, 31)]
    return Trace(
        model="m",
        sampler={"name": "scripted"},
        messages=[{"role": "user", "content": "Plot."}],
        segments=[
            Segment(kind="model", text=text, spans=spans),
            Segment(kind="tool", text="```output\ndrawn\n```\n"),
            Segment(kind="model", text=last, spans=last_spans),
        ],
        steps=[step],
        answer="Done.",
        finish_reason="answer",
    )


def test_the_html_holds_thinking_code_outputs_images_and_answer():
    page = trace_html(make_trace())
    assert "Plot x &lt; 3." in page  # escaped
    assert "plot()" in page and "drawn" in page
    assert f'<img src="data:image/png;base64,{PNG}"/>' in page
    assert "E: x" in page and "\x1b" not in page  # tracebacks without terminal colours
    assert "Done." in page and "answer · 1 block" in page


def test_answer_only_leaves_out_the_thinking():
    page = trace_html(make_trace(), answer_only=True)
    assert "Done." in page and "Plot x" not in page and "plot()" not in page
