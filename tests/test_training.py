"""GRPO pieces, one at a time: advantages, the clipped loss, KL, masking, chunked logprobs,
the training view of a trace, rewards, tasks and configs. No model download: the policy is the
tiny random Qwen2 built from a config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers.scripted import ScriptedSampler
from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
from kernel_bridge.trace import Segment, Span, Step, Trace
from kernel_bridge.training.batch import LogprobCheck, make_batch, training_example
from kernel_bridge.training.config import ConfigError, TrainConfig, load_config
from kernel_bridge.training.grpo import group_advantages, grpo_loss, token_logprobs
from kernel_bridge.training.policy import tiny_policy
from kernel_bridge.training.rewards import (
    Rewards,
    answer_format,
    answer_matches,
    code_steps,
    correct,
    human,
    overlong,
    parse_items,
    parse_number,
    tool_errors,
)
from kernel_bridge.training.tasks import (
    Task,
    TaskError,
    builtin_tasks,
    hold_out,
    load_tasks,
    market_closes,
    split_tasks,
    write_tasks,
)
from tests.samplers_standins import TurnsSamplerStandIn

# -- advantages ----------------------------------------------------------------------------------


def test_advantages_are_normalized_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 7.0, 9.0, 11.0])
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    advantages = group_advantages(rewards, groups)
    for group in (slice(0, 4), slice(4, 8)):
        a = advantages[group]
        assert abs(float(a.mean())) < 1e-6
        assert float(a.std()) == pytest.approx(1.0, abs=1e-3)
    # A group's scale does not matter: +2 per step in group 1 gives what +1 would.
    halved = group_advantages(rewards[4:] / 2, [1] * 4)
    assert float(advantages[4]) == pytest.approx(float(halved[0]), abs=1e-3)


def test_a_group_whose_rewards_are_equal_gets_zero_advantage():
    advantages = group_advantages(torch.tensor([0.5, 0.5, 1.0, 0.0]), ["a", "a", "b", "b"])
    assert advantages[:2].tolist() == [0.0, 0.0]
    assert advantages[2] > 0 > advantages[3]


def test_unscaled_advantages_are_only_centered():
    advantages = group_advantages(torch.tensor([1.0, 3.0]), [0, 0], scale=False)
    assert advantages.tolist() == [-1.0, 1.0]


# -- the loss ------------------------------------------------------------------------------------


def _grad_of_loss(ratio: float, advantage: float, **options) -> float:
    logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, _ = grpo_loss(
        logprobs, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), **options
    )
    loss.backward()
    return float(logprobs.grad[0, 0])


def test_clipping_stops_the_gradient_only_beyond_the_trust_region():
    # Positive advantage: pushing the ratio above 1 + ε earns nothing more.
    assert _grad_of_loss(1.1, 1.0) == pytest.approx(-1.1)  # inside: d(-ratio·A)/dlogp = -ratio
    assert _grad_of_loss(1.3, 1.0) == 0.0
    assert _grad_of_loss(0.5, 1.0) == pytest.approx(-0.5)  # below 1 - ε: still pulled up
    # Negative advantage: mirrored.
    assert _grad_of_loss(0.7, -1.0) == 0.0
    assert _grad_of_loss(1.5, -1.0) == pytest.approx(1.5)
    # An asymmetric band (DAPO's clip-higher) moves only the upper edge.
    assert _grad_of_loss(1.25, 1.0, clip_high=0.28) == pytest.approx(-1.25)


def test_clip_fraction_counts_tokens_whose_gradient_was_clipped():
    logprobs = torch.log(torch.tensor([[1.3, 1.0, 0.7, 1.0]]))
    _, stats = grpo_loss(logprobs, torch.zeros(1, 4), torch.tensor([1.0]), torch.ones(1, 4))
    assert stats["clip_fraction"] == pytest.approx(0.25)


def test_kl_term_matches_a_hand_computation():
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    beta = 0.1
    loss, stats = grpo_loss(
        logprobs, logprobs.detach(), torch.tensor([0.0]), torch.ones(1, 2), ref, beta=beta
    )
    # k3: exp(r - l) - (r - l) - 1 per token, averaged over the two tokens.
    by_hand = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert stats["kl"] == pytest.approx(sum(by_hand) / 2)
    assert float(loss.detach()) == pytest.approx(beta * sum(by_hand) / 2)
    loss.backward()
    # d/dl [exp(r - l) - (r - l) - 1] = 1 - exp(r - l)
    expected = [beta * (1 - math.exp(-0.5)) / 2, beta * (1 - math.exp(1.0)) / 2]
    assert logprobs.grad[0].tolist() == pytest.approx(expected)


def test_token_aggregation_over_micro_batches_equals_the_whole_batch():
    torch.manual_seed(0)
    logprobs = torch.randn(4, 6)
    old = logprobs + 0.05 * torch.randn(4, 6)
    advantages = torch.tensor([1.0, -0.5, 0.3, -1.2])
    mask = torch.tensor(
        [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 0, 1, 1, 0]]
    )
    whole, _ = grpo_loss(logprobs, old, advantages, mask)
    n = float(mask.sum())
    parts = [
        grpo_loss(logprobs[i : i + 2], old[i : i + 2], advantages[i : i + 2], mask[i : i + 2],
                  num_tokens=n)[0]
        for i in (0, 2)
    ]  # fmt: skip
    assert float(sum(parts)) == pytest.approx(float(whole))
    # "sequence" averages each sequence first: a short sequence weighs as much as a long one.
    per_sequence, _ = grpo_loss(logprobs, old, advantages, mask, aggregation="sequence")
    assert float(per_sequence) != pytest.approx(float(whole))


# -- logprobs and masking on the tiny policy -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = tiny_policy(seed=1)
    return model.float().train(), tokenizer


def _rows(tokenizer):
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "add 2 and 3"}], add_generation_prompt=True, tokenize=True
    )
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    model_ids = tokenizer.encode("```python\n2+3\n```\n", add_special_tokens=False)
    tool_ids = tokenizer.encode("```output\n5\n```\n", add_special_tokens=False)
    answer_ids = tokenizer.encode("so 5", add_special_tokens=False)
    completion = model_ids + tool_ids + answer_ids
    mask = [1] * len(model_ids) + [0] * len(tool_ids) + [1] * len(answer_ids)
    other = tokenizer.encode("it is 5", add_special_tokens=False)
    nan = [float("nan")]
    return [
        (prompt, completion, mask, nan * len(completion)),
        ([*prompt, 5, 6], other, [1] * len(other), nan * len(other)),
    ]


def test_chunked_logprobs_equal_the_full_computation(tiny):
    model, tokenizer = tiny
    batch = make_batch(_rows(tokenizer), [1.0, -1.0], tokenizer.pad_token_id)
    results = []
    for chunk in (0, 7):
        model.zero_grad()
        logprobs = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.start, chunk)
        loss, _ = grpo_loss(logprobs, logprobs.detach(), batch.advantages, batch.mask)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((logprobs.detach(), grads))
    (full, full_grads), (chunked, chunked_grads) = results
    assert torch.allclose(full, chunked, atol=1e-5)
    for name, grad in full_grads.items():
        assert torch.allclose(grad, chunked_grads[name], atol=1e-6), name


def test_masked_tool_tokens_get_exactly_zero_gradient(tiny):
    model, tokenizer = tiny
    batch = make_batch(_rows(tokenizer), [1.0, -1.0], tokenizer.pad_token_id)
    hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    logits = model.lm_head(hidden.last_hidden_state)[:, batch.start : -1]
    logits.retain_grad()
    targets = batch.input_ids[:, batch.start + 1 :]
    logprobs = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    loss, _ = grpo_loss(logprobs, logprobs.detach(), batch.advantages, batch.mask)
    loss.backward()
    grad = logits.grad.abs().sum(-1)  # per position
    assert (grad[~batch.mask] == 0).all()  # tool tokens and padding: exactly zero
    assert (grad[batch.mask] > 0).all()  # every model token: non-zero
    assert int((~batch.mask[0]).sum()) > len(tokenizer.encode("```output\n5\n```\n")) - 1


def test_the_gradient_does_not_depend_on_which_tool_token_was_masked(tiny):
    """Through the production path (chunked head): change the last completion token, a masked
    tool token that no later position reads, and the weights' gradient stays bit-identical."""
    model, tokenizer = tiny
    prompt, completion, mask, recorded = _rows(tokenizer)[0]
    grads = []
    for last in (completion[-1], tokenizer.convert_tokens_to_ids("x")):
        row = (prompt, [*completion[:-1], last], [*mask[:-1], 0], recorded)
        batch = make_batch([row], [1.0], tokenizer.pad_token_id)
        model.zero_grad()
        logprobs = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.start, 5)
        grpo_loss(logprobs, logprobs.detach() - 0.1, batch.advantages, batch.mask)[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert any(g.abs().sum() > 0 for g in grads[0].values())
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_a_batch_puts_each_completion_token_under_its_own_mask(tiny):
    _, tokenizer = tiny
    rows = _rows(tokenizer)
    batch = make_batch(rows, [1.0, -1.0], tokenizer.pad_token_id)
    for row, (prompt, completion, mask, _) in enumerate(rows):
        at = len(prompt) - 1 - batch.start
        targets = batch.input_ids[row, batch.start + 1 :]
        assert targets[at : at + len(completion)].tolist() == completion
        assert batch.mask[row, at : at + len(completion)].int().tolist() == mask
        assert not batch.mask[row, at + len(completion) :].any()  # padding
        assert not batch.mask[row, :at].any()  # prompt


# -- the trace as the trainer sees it ------------------------------------------------------------


def _trace(tokenizer, finish="answer") -> Trace:
    model_text = "```python\nprint(5)\n```\n"
    ids = tokenizer.encode(model_text, add_special_tokens=False)
    answer = "<answer>5</answer>"
    return Trace(
        model="tiny",
        sampler={"name": "test"},
        messages=[{"role": "user", "content": "2+3?"}],
        prompt_token_ids=[1, 2, 3],
        segments=[
            Segment(
                "model", model_text, ids, [-0.5] * len(ids), [Span("code", 0, len(model_text))]
            ),
            Segment("tool", "```output\n5\n```\n"),  # no ids: encoded alone
            Segment("model", answer, spans=[Span("answer", 0, len(answer))]),
        ],
        answer="5",
        finish_reason=finish,
    )


def test_training_example_keeps_recorded_ids_and_logprobs_and_appends_the_end_of_turn(tiny):
    _, tokenizer = tiny
    trace = _trace(tokenizer)
    example = training_example(trace, tokenizer, advantage=0.5, max_len=1000)
    view = trace.training_view(tokenizer)
    assert example.prompt_ids == [1, 2, 3]
    assert example.completion_ids[:-1] == view.completion_ids
    assert example.completion_ids[-1] == tokenizer.eos_token_id
    assert example.mask == [*view.mask, 1]
    n_model = len(trace.segments[0].token_ids)
    assert example.recorded[:n_model] == [-0.5] * n_model
    assert all(math.isnan(x) for x in example.recorded[n_model:])
    cut = training_example(_trace(tokenizer, "max_tokens"), tokenizer, 0.5, max_len=10)
    assert len(cut.completion_ids) == 7 and cut.completion_ids[-1] != tokenizer.eos_token_id


def test_old_logprobs_are_the_recorded_ones_unless_they_disagree():
    check = LogprobCheck(tolerance=0.5)
    recorded = torch.tensor([[-1.0, float("nan"), -2.0], [-1.0, -1.0, -1.0]])
    trainer = torch.tensor([[-1.1, -3.0, -2.0], [-1.0, -2.0, -1.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    old = check(recorded, trainer, mask)
    assert old[0].tolist() == pytest.approx([-1.0, -3.0, -2.0])  # NaN → the trainer's value
    assert old[1].tolist() == pytest.approx([-1.0, -2.0, -1.0])  # differs by 1.0 → all trainer's
    stats = check.stats()
    assert stats["logprob_diff_max"] == pytest.approx(1.0)
    assert stats["logprob_fallbacks"] == 1


async def test_a_run_through_the_kernel_has_recorded_logprobs_exactly_at_its_model_tokens(
    tiny, kernel
):
    """A real run (Reasoner, kernel, a stand-in model that records ids and logprobs): in the
    training view every model token carries its recorded logprob, every tool token none. A run
    whose sampler records no ids (the ScriptedSampler) has no logprobs, one NaN per id."""
    _, tokenizer = tiny
    turns = ["```python\nprint(6 * 7)\n```\n", "<answer>42</answer>"]
    sampler = TurnsSamplerStandIn(turns, chunk_size=4, token_ids=True)
    trace = await Reasoner(sampler, kernel).run("What is 6 * 7?")
    assert [s.kind for s in trace.segments] == ["model", "tool", "model"]
    assert trace.steps[0].output_text.strip() == "42" and trace.answer == "42"
    view = trace.training_view(tokenizer)
    assert len(view.logprobs) == len(view.completion_ids) == len(view.mask)
    model_ids = [token for ids in sampler.emitted_ids for token in ids]
    assert [t for t, m in zip(view.completion_ids, view.mask, strict=True) if m] == model_ids
    for m, logprob in zip(view.mask, view.logprobs, strict=True):
        assert (logprob == -0.5) if m else math.isnan(logprob)
    assert view.mask.count(0) == len(trace.segments[1].text)  # the output block, one id a char

    scripted = await Reasoner(ScriptedSampler("".join(turns)), kernel).run("What is 6 * 7?")
    assert [s.kind for s in scripted.segments] == ["model", "tool", "model"]
    view = scripted.training_view(tokenizer)
    per_segment = [tokenizer.encode(s.text, add_special_tokens=False) for s in scripted.segments]
    assert view.completion_ids == [token for ids in per_segment for token in ids]
    assert len(view.logprobs) == len(view.completion_ids)
    assert all(math.isnan(x) for x in view.logprobs)


async def test_a_sampled_runs_recorded_logprobs_are_the_policys_at_the_same_tokens():
    """The transformers sampler records each sampled token's logprob; in the training view it
    sits at that token, so the trainer's logprob for the same position is the same number."""
    model, tokenizer = tiny_policy(seed=2)
    sampler = TransformersSampler(
        model.eval(), tokenizer, config=GenerationConfig(temperature=1.0, max_new_tokens=24)
    )
    limits = Limits(max_tokens=24)
    async with Reasoner(sampler, limits=limits, system_prompt="", examples=[]) as reasoner:
        trace = await reasoner.run("Reply with digits.")
    view = trace.training_view(tokenizer)
    recorded = [x for s in trace.segments if s.kind == "model" for x in s.logprobs or []]
    assert len(recorded) > 0 and view.prompt_ids == trace.prompt_token_ids
    example = training_example(trace, tokenizer, 1.0, max_len=4096)
    batch = make_batch([example.row], [1.0], tokenizer.pad_token_id)
    with torch.no_grad():
        trainer = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.start)
    have = batch.mask & ~batch.recorded.isnan()
    assert int(have.sum()) == len(recorded)
    assert (batch.recorded - trainer)[have].abs().max() < 1e-4


# -- rewards -------------------------------------------------------------------------------------


def test_numbers_are_read_from_the_end_of_the_answer():
    assert parse_number("The product is 121,932,631,112,635,269.") == 121932631112635269
    assert parse_number("x = -3.25e2 then 7") == 7
    assert parse_number("about -0.5") == -0.5
    assert parse_number("no digits") is None


def test_answers_match_exactly_numerically_or_as_sets_and_lists():
    numeric = Task("n", "q", 27.35, match="numeric", tolerance=0.01)
    assert answer_matches("It was $27.36", numeric)
    assert not answer_matches("It was 27.40", numeric)
    big = Task("b", "q", 121932631112635269, match="numeric")
    assert answer_matches("121932631112635269", big)
    assert not answer_matches("121932631112635270", big)
    exact = Task("e", "q", "Saturday")
    assert answer_matches("  **saturday**. ", exact)
    assert answer_matches("\\boxed{Saturday}", exact)
    assert not answer_matches("It is Saturday", exact)
    as_set = Task("s", "q", [1, 4, 9], match="set")
    assert answer_matches("[9, 4, 1]", as_set)
    assert answer_matches("1, 4 and 9", as_set)
    assert not answer_matches("1, 4", as_set)
    as_list = Task("l", "q", [2, 3, 5], match="list")
    assert answer_matches("2, 3, 5", as_list)
    assert not answer_matches("5, 3, 2", as_list)
    assert not answer_matches(None, exact)


def test_reward_functions_read_the_trace(tiny):
    _, tokenizer = tiny
    trace = _trace(tokenizer)
    task = Task("t", "2+3?", 5, match="numeric")
    assert correct(trace, task) == 1.0
    assert answer_format(trace) == 1.0
    trace.steps = [
        Step(0, "print(5)", "ok", "5", [], 1, 0.0, 0.1, []),
        Step(1, "1/0", "error", "ZeroDivisionError", [], 2, 0.0, 0.1, []),
    ]
    assert tool_errors(trace) == -0.5
    assert code_steps(trace) == -2.0
    assert overlong(trace) == 0.0
    cut = _trace(tokenizer, "max_tokens")
    assert answer_format(cut) == 0.0 and overlong(cut) == -1.0
    with pytest.raises(ValueError, match="needs a task"):
        correct(trace, None)


def test_human_labels_from_the_sidebar_are_a_reward(tiny):
    _, tokenizer = tiny
    trace = _trace(tokenizer)
    assert human(trace) == 0.0
    trace.labels = {"rating": "up", "note": "clear"}
    assert human(trace) == 1.0
    trace.labels = {"rating": "down"}
    assert human(trace) == -1.0


def test_rewards_combine_names_and_functions_with_weights(tiny):
    _, tokenizer = tiny
    trace = _trace(tokenizer)
    task = Task("t", "2+3?", 5, match="numeric")

    def short(trace, task):
        return 1.0 if len(trace.text) < 100 else 0.0

    result = Rewards({"correct": 1.0, "format": 0.5, short: 0.25})(trace, task)
    assert result.parts == {"correct": 1.0, "format": 1.0, "short": 1.0}
    assert result.total == pytest.approx(1.75)
    with pytest.raises(ValueError, match="no reward function named 'corect'"):
        Rewards({"corect": 1.0})


def test_list_answers_parse_in_common_shapes():
    assert parse_items("[2129, 2131, 2137]") == ["2129", "2131", "2137"]
    assert parse_items("AAPL; MSFT") == ["aapl", "msft"]


# -- tasks ---------------------------------------------------------------------------------------


def test_builtin_tasks_come_in_tiers_with_a_held_out_split():
    tasks = builtin_tasks()
    assert {t.tier for t in tasks} == {1, 2, 3, 4}
    train, heldout = split_tasks(tasks)
    for tier in (1, 2, 3, 4):
        assert any(t.tier == tier for t in train) and any(t.tier == tier for t in heldout)
    assert len({t.id for t in tasks}) == len(tasks)
    assert not {t.question for t in train} & {t.question for t in heldout}
    assert all(t.tools == "finance" and t.cutoff for t in tasks if t.tier >= 3)


def test_builtin_references_agree_with_an_independent_computation():
    import calendar
    from datetime import date, timedelta

    for task in builtin_tasks([1, 2]):
        q = task.question
        if q.startswith("How many days are there from"):
            first, second = (date.fromisoformat(x) for x in q.rstrip("?").split()[-3::2])
            assert task.answer == (second - first).days
        if q.startswith("What day of the week"):
            words = q.split()
            days, start = int(words[7]), date.fromisoformat(words[10].rstrip("?"))
            assert task.answer == calendar.day_name[(start + timedelta(days=days)).weekday()]
        if q.startswith("List all prime numbers strictly between"):
            a, b = int(q.split()[6]), int(q.split()[8].rstrip(","))
            primes = [n for n in range(a + 1, b) if all(n % d for d in range(2, int(n**0.5) + 1))]
            assert task.answer == primes


def test_market_references_come_from_the_bundled_monthly_closes():
    import csv
    from importlib.resources import files

    rows = list(csv.DictReader((files("vega_datasets") / "_data" / "stocks.csv").open()))
    closes = {}
    for row in rows:  # dates look like "Jan 1 2000"
        _month, _, year = row["date"].split()
        closes.setdefault((row["symbol"], int(year)), []).append(float(row["price"]))
    assert market_closes().shape[1] == 5
    checked = 0
    for task in builtin_tasks([3]):
        if "highest monthly closing price" in task.question:
            ticker = task.question.split("What was ")[1].split("'")[0]
            year = int(task.question.rstrip("?").split()[-1])
            assert task.answer == max(closes[(ticker, year)])
            assert task.cutoff == f"{year}-12-31"
            checked += 1
    assert checked >= 3


def _write(path, lines):
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines))
    return path


def test_task_files_load_with_defaults(tmp_path):
    path = _write(
        tmp_path / "mine.jsonl",
        [
            {"question": "2+2?", "answer": 4},
            "",
            "// a comment",
            {"id": "primes", "question": "primes below 10?", "answer": [2, 3, 5, 7]},
            {"question": "capital of France?", "answer": "Paris", "split": "heldout"},
        ],
    )
    tasks = load_tasks(path)
    assert [t.id for t in tasks] == ["mine-1", "primes", "mine-5"]
    assert [t.match for t in tasks] == ["numeric", "list", "exact"]
    _, heldout = split_tasks(tasks)
    assert [t.id for t in heldout] == ["mine-5"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: not valid JSON"),
        ('{"question": "q"}', "line 1: missing 'answer'"),
        ('{"question": "q", "answer": 1, "anwser": 2}', "unknown key(s) 'anwser'"),
        ('{"question": "q", "answer": "x", "match": "numeric"}', "needs a number"),
        ('{"question": "q", "answer": 1, "match": "fuzzy"}', "match must be one of"),
        ('{"question": "q", "answer": 1, "cutoff": "2008/01/01"}', "cutoff must be a date"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_task_file_errors_name_the_line_and_the_problem(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_tasks(path)
    assert str(path) in str(e.value)


def test_task_files_refuse_duplicate_ids_and_emptiness(tmp_path):
    dup = _write(tmp_path / "dup.jsonl", [{"id": "a", "question": "q", "answer": 1}] * 2)
    with pytest.raises(TaskError, match=r"duplicate id 'a'.*line 1"):
        load_tasks(dup)
    with pytest.raises(TaskError, match="holds no tasks"):
        load_tasks(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(TaskError, match="cannot read the task file"):
        load_tasks(tmp_path / "missing.jsonl")


def test_hold_out_is_stable_and_keeps_some_training_tasks():
    tasks = [Task(f"t{i}", f"q{i}", i, match="numeric") for i in range(10)]
    first, again = hold_out(tasks, 0.2), hold_out(list(reversed(tasks)), 0.2)
    held = {t.id for t in first if t.split == "heldout"}
    assert len(held) == 2 and held == {t.id for t in again if t.split == "heldout"}
    assert [t.split for t in hold_out(tasks[:1], 0.5)] == ["train"]


# -- configuration -------------------------------------------------------------------------------


def test_config_loads_from_toml_with_a_rewards_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'model = "tiny"\ngroup_size = 4\nlearning_rate = 1\ntiers = [1]\n'
        "[rewards]\ncorrect = 1.0\nformat = 0.2\n"
    )
    config = load_config(path, steps=3)
    assert config.model == "tiny" and config.group_size == 4 and config.steps == 3
    assert config.learning_rate == 1 and config.rewards == {"correct": 1.0, "format": 0.2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("group_sise = 4", "unknown key 'group_sise'; did you mean 'group_size'?"),
        ('group_size = "8"', "group_size must be an integer, got '8'"),
        ("lora = 1", "lora must be true or false"),
        ("group_size = 1", "group_size must be at least 2"),
        ("temperature = 0", "temperature must be positive for training"),
        ('backend = "tpu"', "backend must be one of 'auto', 'transformers', 'vllm'"),
        ("[rewards]\nexactness = 1.0", "rewards has no function 'exactness'"),
        ("tiers = [1, 'two']", "tiers must be a list of integers"),
        ("steps = ", "not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_a_missing_config_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the training config"):
        load_config(tmp_path / "nope.toml")


def test_config_dataclass_validates_too():
    with pytest.raises(ConfigError, match="clip_low"):
        TrainConfig(clip_low=1.5)
    assert TrainConfig().replace(beta=0.04).beta == 0.04


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(ROOT.glob("configs/*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.steps >= 1 and config.rewards


def test_the_example_task_file_loads():
    tasks = load_tasks(ROOT / "examples" / "tasks.jsonl")
    train, heldout = split_tasks(tasks)
    assert train and heldout
    assert any(t.tools == "finance" and t.cutoff for t in tasks)


# -- a second stage: LoRA from a trained adapter ----------------------------------------------


def test_lora_init_starts_the_adapters_from_a_checkpoint_and_rejects_another_rank(tmp_path):
    from safetensors.torch import save_file

    from kernel_bridge.training.policy import load_policy, trainable_parameters

    first, _ = load_policy(TrainConfig(model="tiny", lora=True, lora_rank=4, progress=False))
    torch.manual_seed(3)
    trained = {n: torch.randn_like(p) for n, p in trainable_parameters(first).items()}
    checkpoint = tmp_path / "checkpoints" / "step-000002"
    checkpoint.mkdir(parents=True)
    save_file(trained, str(checkpoint / "weights.safetensors"))  # as the trainer writes it

    config = TrainConfig(model="tiny", lora=True, lora_rank=4, lora_init=str(tmp_path))
    second, _ = load_policy(config)
    started = trainable_parameters(second)
    assert started.keys() == trained.keys()
    assert all(torch.equal(started[n], trained[n]) for n in trained)

    with pytest.raises(ConfigError, match="same lora_rank"):
        load_policy(TrainConfig(model="tiny", lora=True, lora_rank=2, lora_init=str(tmp_path)))
    with pytest.raises(ConfigError, match="lora_init needs lora = true"):
        TrainConfig(model="tiny", lora_init=str(tmp_path))
    with pytest.raises(ConfigError, match="no LoRA adapter at"):
        load_policy(TrainConfig(model="tiny", lora=True, lora_init=str(tmp_path / "nothing")))


def test_a_hint_is_for_training_tasks_only_and_saved_only_when_given(tmp_path):
    with pytest.raises(TaskError, match="held-out task takes no hint"):
        Task("h", "q?", 1, split="heldout", hint="look")
    with pytest.raises(TaskError, match="hint must be non-empty"):
        Task("h", "q?", 1, hint=" ")
    guided, plain = Task("a", "q?", 1, hint="look"), Task("b", "q?", 1)
    assert guided.asked == "q? Hint: look" and plain.asked == "q?"
    assert "hint" not in plain.to_dict()  # task files without hints stay as they were
    path = tmp_path / "tasks.jsonl"
    write_tasks([guided, plain], path)
    assert load_tasks(path) == [guided, plain]
    # Held out by hash: never a guided task, which evaluation could not ask.
    many = [Task(f"t{i}", "q?", 1, hint="look" if i % 2 else None) for i in range(20)]
    assert all(t.hint is None for t in hold_out(many, 0.5) if t.split == "heldout")


def test_the_tier2_curriculum_holds_out_the_builtin_tasks_word_for_word():
    import importlib.util
    from pathlib import Path

    from kernel_bridge.training.tasks import builtin_tasks, load_tasks

    path = Path(__file__).parents[1] / "configs" / "make_tier2_curriculum.py"
    spec = importlib.util.spec_from_file_location("make_tier2_curriculum", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tasks = module.curriculum()
    assert load_tasks(path.with_name("tier2-curriculum.jsonl")) == tasks  # the committed file
    heldout = [t for t in tasks if t.split == "heldout"]
    assert heldout == [t for t in builtin_tasks([2]) if t.split == "heldout"]
    hinted = [t for t in tasks if "Hint:" in t.question]
    assert len(hinted) == 5 * 4 and all(t.split == "train" for t in hinted)
    assert {t.question.split(" Hint:")[0] for t in hinted} <= {t.question for t in tasks}
    # The guided run's file: the same hinted instances, each with its question word for word
    # and the sentence as its hint.
    guided = module.guided()
    assert load_tasks(path.with_name("tier2-guided.jsonl")) == guided  # the committed file
    assert [t for t in guided if t.hint is None] == builtin_tasks([2])
    with_hint = [t for t in guided if t.hint is not None]
    assert [t.asked for t in with_hint] == [t.question for t in hinted]  # what stage two asked
