"""ScriptedSampler with several turns: one script replays a whole session, a turn per question."""

from __future__ import annotations

import pytest

from kernel_bridge.reasoner import Reasoner
from kernel_bridge.samplers import SampleRequest
from kernel_bridge.samplers.scripted import ScriptedSampler

SESSION = """\
=== question: first number
<think>
```python
x = 20
```
</think>
<answer>set</answer>

=== question: Double It
<think>
```python
x * 2
```
</think>
<answer>doubled</answer>
"""


async def replay(sampler: ScriptedSampler, question: str) -> str:
    request = SampleRequest(messages=[{"role": "user", "content": question}])
    return "".join([d.text async for d in sampler.stream(request)])


async def test_each_question_replays_its_own_turn():
    sampler = ScriptedSampler(SESSION)
    assert (await replay(sampler, "Set the first number.")).startswith("<think>\n```python\nx = 20")
    second = await replay(sampler, "Now double it, please.")  # matched without regard to case
    assert second.startswith("<think>\n```python\nx * 2\n") and "x = 20" not in second
    assert "===" not in second


async def test_a_session_runs_turn_by_turn_in_one_kernel(kernel):
    sampler = ScriptedSampler(SESSION)
    reasoner = Reasoner(sampler, kernel)
    assert (await reasoner.run("The first number.")).answer == "set"
    trace = await reasoner.run("Double it.")
    assert trace.answer == "doubled" and trace.steps[0].output_text == "40"


async def test_a_question_no_turn_answers_is_a_clear_error():
    sampler = ScriptedSampler(SESSION, name="scripted:session.txt")
    with pytest.raises(ValueError) as refused:
        await replay(sampler, "Halve it.")
    assert str(refused.value) == (
        "scripted:session.txt: no turn of the script answers the question 'Halve it.'; its turns "
        "are for questions containing 'first number', 'Double It'"
    )


async def test_text_before_the_first_turn_answers_any_other_question():
    sampler = ScriptedSampler("<answer>fallback</answer>\n" + SESSION)
    assert await replay(sampler, "Something else.") == "<answer>fallback</answer>\n"
    assert "x = 20" in await replay(sampler, "first number")


async def test_a_script_without_turns_answers_every_question():
    sampler = ScriptedSampler("<answer>always</answer>")
    assert await replay(sampler, "anything") == "<answer>always</answer>"
    assert sampler.turns == [(None, "<answer>always</answer>")]
