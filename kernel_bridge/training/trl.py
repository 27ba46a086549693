"""kernel-bridge rollouts inside TRL's ``GRPOTrainer``: a ``rollout_func`` and reward functions.

    rollouts = KernelRollouts("batched", tasks=tasks)        # or "vllm:http://HOST:8000/v1"
    trainer = GRPOTrainer(model, reward_funcs=reward_funcs({"correct": 1.0, "format": 0.1}),
                          args=GRPOConfig(...), train_dataset=task_dataset(tasks),
                          processing_class=tokenizer, rollout_func=rollouts)
    with rollouts:
        trainer.train()

Each prompt TRL hands the ``rollout_func`` (its ``num_generations`` copies included) runs once
through the ``Reasoner`` with a fresh kernel from a ``KernelPool`` (local, or on a Jupyter Kernel
Gateway with ``url=``), on an event loop in a thread of its own. TRL gets the trace's training
view: the sampler's prompt ids, each segment's own token ids (never the joined text
re-tokenized), the sampler's logprobs and ``env_mask`` (1 model token, 0 spliced tool output),
plus the trace's fields for the reward functions. TRL does the rest: advantages, loss,
optimizer, accelerate/DeepSpeed, weight sync to its vLLM server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from kernel_bridge.execution import KernelPool, LoopThread
from kernel_bridge.reasoner import Limits
from kernel_bridge.samplers import Sampler
from kernel_bridge.trace import Trace, TraceStore
from kernel_bridge.training.batch import training_example
from kernel_bridge.training.rewards import RewardFn, Rewards, as_rewards
from kernel_bridge.training.rollout import RolloutSettings, rollout
from kernel_bridge.training.tasks import Task

# What the rollout_func adds to each completion's inputs for the reward functions.
TRACE_FIELDS = ("answer", "finish_reason", "steps", "trace", "task")

# Samplers over the trainer's own policy (the weights TRL updates), by name.
POLICY_SAMPLERS = ("batched", "transformers")

Prompt = str | list[dict[str, Any]]


class KernelRollouts:
    """TRL's ``rollout_func``: every prompt it gets runs once through the ``Reasoner``.

    ``sampler`` is what generates: ``"batched"`` (default) or ``"transformers"`` sample from the
    trainer's own model (the weights TRL trains; the KV cache is dropped before each call);
    ``"vllm:http://HOST:8000/v1"`` samples on the vLLM server that TRL's server mode keeps in
    sync with the policy, at TRL's temperature and top-p; or pass any ``Sampler``. A prompt
    whose question (its last user message) is one of ``tasks``' gets that task's tools in its
    kernel, and the task goes to the reward functions (``correct`` needs it). ``settings``
    defaults to ``Limits(max_tokens=max_completion_length)``, the default system prompt and all
    rollouts at once. ``pool_size`` warm kernels, local ones sandboxed where bubblewrap works
    (``settings.sandbox``); ``kernel_options`` go to every ``Kernel`` (``url`` and ``token`` for
    a Kernel Gateway, ``sandbox``, ``memory_limit``, …). ``traces`` appends
    every trace to a ``.jsonl`` file.
    """

    def __init__(
        self,
        sampler: Sampler | str = "batched",
        *,
        tasks: Iterable[Task] = (),
        settings: RolloutSettings | None = None,
        pool_size: int = 4,
        kernel_options: Mapping[str, Any] | None = None,
        traces: str | None = None,
    ) -> None:
        self.sampler_spec = sampler
        self.sampler: Sampler | None = None if isinstance(sampler, str) else sampler
        self.tasks: dict[str, Task] = {}
        for task in tasks:
            self.tasks.setdefault(task.question, task)
        self.settings = settings
        self.pool_size = pool_size
        self.kernel_options = dict(kernel_options or {})
        self.store = TraceStore(traces) if traces else None
        self.pool: KernelPool | None = None
        self._loop: LoopThread | None = None
        self.last_traces: list[Trace] = []
        self.rollouts_done = 0
        self.rollout_seconds = 0.0  # wall time spent inside the rollout_func, for throughput

    # -- the rollout_func ----------------------------------------------------------------------

    def __call__(self, prompts: Sequence[Prompt], trainer: Any) -> dict[str, list[Any]]:
        """One rollout per prompt; TRL's keys plus ``env_mask`` and the ``TRACE_FIELDS``."""
        begin = time.perf_counter()
        if self._loop is None:
            self._start(trainer)
        assert self._loop is not None and self.sampler is not None
        reset = getattr(self.sampler, "reset_cache", None)
        if reset is not None:
            reset()  # a KV cache of the previous weights
        policy = _policy(trainer) if self.sampler_spec in POLICY_SAMPLERS else None
        with _eval_mode(policy):
            traces = self._loop.run(self._run_all(list(prompts)))
        if self.store is not None:
            for trace in traces:
                self.store.append(trace)
        limit = getattr(trainer.args, "max_completion_length", None)
        output = completions(traces, trainer.processing_class, limit)
        output.update(self._fields(traces, prompts))
        self.last_traces = traces
        self.rollouts_done += len(traces)
        self.rollout_seconds += time.perf_counter() - begin
        return output

    async def _run_all(self, prompts: list[Prompt]) -> list[Trace]:
        assert self.sampler is not None and self.settings is not None
        if self.pool is None:
            options = dict(self.kernel_options)
            if "url" not in options:  # local kernels: sandboxed where bubblewrap works, as the
                options = {**self.settings.kernel_options(), **options}  # trainer's rollouts are
            self.pool = await KernelPool(size=self.pool_size, **options).start()
        pool, sampler, settings = self.pool, self.sampler, self.settings
        gate = asyncio.Semaphore(settings.concurrency or len(prompts))

        async def one(prompt: Prompt) -> Trace:
            async with gate:
                return await rollout(sampler, pool, self.task_for(prompt), settings, prompt)

        async with asyncio.TaskGroup() as runs:
            jobs = [runs.create_task(one(prompt)) for prompt in prompts]
        return [job.result() for job in jobs]

    def task_for(self, prompt: Prompt) -> Task | None:
        """The task whose question is the prompt (its last user message), or None."""
        return self.tasks.get(_question(prompt))

    def _fields(self, traces: list[Trace], prompts: Sequence[Prompt]) -> dict[str, list[Any]]:
        return {
            "answer": [t.answer for t in traces],
            "finish_reason": [t.finish_reason for t in traces],
            "steps": [[step.to_dict() for step in t.steps] for t in traces],
            "trace": traces,
            "task": [self.task_for(p) for p in prompts],
        }

    # -- setup and teardown --------------------------------------------------------------------

    def _start(self, trainer: Any) -> None:
        columns = set(getattr(trainer.train_dataset, "column_names", None) or ())
        clash = sorted(columns & set(TRACE_FIELDS))
        if clash:
            raise ValueError(
                f"the training dataset has the column(s) {clash}, which the kernel-bridge "
                f"rollout_func fills from each trace ({', '.join(TRACE_FIELDS)}); TRL would "
                "silently replace the dataset's values: rename the column(s) (a reference "
                "answer as 'reference', say)"
            )
        if self.settings is None:
            limit = trainer.args.max_completion_length or Limits().max_tokens
            self.settings = RolloutSettings(limits=Limits(max_tokens=limit))
        else:
            self.settings = dataclasses.replace(self.settings)  # ours to adjust
        if self.sampler is None:
            self.sampler = self._make_sampler(trainer)
        self._loop = LoopThread()

    def _make_sampler(self, trainer: Any) -> Sampler:
        spec, args = self.sampler_spec, trainer.args
        assert isinstance(spec, str) and self.settings is not None
        if spec.startswith("vllm:"):
            return _vllm_server_sampler(spec, args, self.settings.limits.max_tokens)
        if spec not in POLICY_SAMPLERS:
            raise ValueError(
                f"KernelRollouts samples from the policy TRL trains: sampler must be 'batched' or "
                f"'transformers' (the trainer's model), 'vllm:http://HOST:PORT/v1' (TRL's vLLM "
                f"server), or a Sampler; got {spec!r}"
            )
        from kernel_bridge.samplers.batched import BatchedSampler
        from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler

        config = GenerationConfig(
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=self.settings.limits.max_tokens,
        )
        model, tokenizer = _policy(trainer), trainer.processing_class
        name = getattr(model, "name_or_path", None) or type(model).__name__
        if spec == "transformers":
            return TransformersSampler(model, tokenizer, config=config, name=name)
        sampler = BatchedSampler(model, tokenizer, config=config, name=name)
        if not self.settings.concurrency:  # a rollout's time limit runs once it has a row
            self.settings.concurrency = sampler.max_batch
        return sampler

    def close(self) -> None:
        """Shut the pool's kernels down and stop the event loop's thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self.pool is not None:
                loop.run(self.pool.close())
                self.pool = None
        finally:
            loop.close()

    def __enter__(self) -> KernelRollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def completions(
    traces: Sequence[Trace], tokenizer: Any, max_completion_length: int | None = None
) -> dict[str, list[Any]]:
    """TRL's ``prompt_ids``, ``completion_ids``, ``logprobs`` and ``env_mask`` of each trace.

    The ids are ``Trace.training_view``'s (a run that ended with an answer gets its end-of-turn
    token, as in kernel-bridge's own trainer), cut to ``max_completion_length``. ``logprobs``
    are the sampler's: 0.0 on tool tokens (TRL's convention; they are masked), NaN on a model
    token without a recorded value (TRL then applies no correction there). A run with no text
    gets one end-of-turn token, as TRL needs a non-empty completion: a model token when the
    model ended its turn at once, masked when something else ended the run (a sampler error).
    """
    keys = ("prompt_ids", "completion_ids", "logprobs", "env_mask")
    out: dict[str, list[Any]] = {key: [] for key in keys}
    for trace in traces:
        example = training_example(trace, tokenizer, 0.0, max_len=sys.maxsize)
        ids, mask, recorded = example.completion_ids, example.mask, example.recorded
        if max_completion_length is not None:
            ids, mask = ids[:max_completion_length], mask[:max_completion_length]
            recorded = recorded[:max_completion_length]
        if not ids:  # TRL needs a token: the end of turn, the model's own if it chose to stop
            eos = tokenizer.eos_token_id
            ids = [eos if eos is not None else tokenizer.pad_token_id]
            mask, recorded = ([1], [math.nan]) if trace.finish_reason == "answer" else ([0], [0.0])
        logprobs = [lp if m else 0.0 for lp, m in zip(recorded, mask, strict=True)]
        out["prompt_ids"].append(list(example.prompt_ids))
        out["completion_ids"].append(list(ids))
        out["logprobs"].append(logprobs)
        out["env_mask"].append(list(mask))
    return out


def reward_funcs(rewards: Rewards | Mapping[Any, float] | RewardFn) -> list[Callable[..., Any]]:
    """kernel-bridge rewards as TRL reward functions: one per term, returning weight × part.

    TRL sums its reward functions with weight 1 (``reward_weights`` unset), so the sum is the
    kernel-bridge total, and TRL logs each part under its name (``rewards/correct/mean``). They
    read the ``trace`` and ``task`` fields that ``KernelRollouts`` adds.
    """
    funcs = []
    for name, fn, weight in as_rewards(rewards).terms:
        funcs.append(_reward_func(name, fn, weight))
    return funcs


def _reward_func(name: str, fn: RewardFn, weight: float) -> Callable[..., list[float]]:
    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        if "trace" not in kwargs:
            raise ValueError(
                f"the kernel-bridge reward {name!r} reads each completion's trace: give the "
                "GRPOTrainer rollout_func=KernelRollouts(...)"
            )
        pairs = zip(kwargs["trace"], kwargs.get("task") or [None] * len(completions), strict=True)
        return [weight * float(fn(trace, task)) for trace, task in pairs]

    reward.__name__ = reward.__qualname__ = name
    return reward


def task_dataset(tasks: Iterable[Task], *, conversational: bool = False) -> Any:
    """A ``datasets.Dataset`` of the tasks' questions: ``prompt`` (text, or one user message
    when ``conversational``) and ``task_id``. Give the same tasks to ``KernelRollouts``."""
    from datasets import Dataset

    rows = [
        {
            "prompt": [{"role": "user", "content": t.question}] if conversational else t.question,
            "task_id": t.id,
        }
        for t in tasks
    ]
    return Dataset.from_list(rows)


def _vllm_server_sampler(spec: str, args: Any, max_tokens: int) -> Sampler:
    """A ``VLLMServerSampler`` on the server TRL's server mode keeps in sync with the policy,
    sampling as TRL would (its temperature and top-p)."""
    if not (getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "server"):
        raise ValueError(
            f"sampler {spec!r} generates on a vLLM server whose weights only TRL's server mode "
            "updates: set GRPOConfig(use_vllm=True, vllm_mode='server', "
            "vllm_server_base_url='http://HOST:PORT') for the same server"
        )
    from kernel_bridge.samplers.vllm import VLLMServerSampler, parse_model_string

    url, served = parse_model_string(spec)
    return VLLMServerSampler.connect(
        url, served, temperature=args.temperature, top_p=args.top_p, max_tokens=max_tokens
    )


def _question(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    for message in reversed(prompt):
        if message.get("role") == "user":
            content = message.get("content", "")
            return content if isinstance(content, str) else str(content)
    return ""


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Generate in eval mode: in train mode, gradient checkpointing turns the KV cache off."""
    if model is None or not model.training:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()


def _policy(trainer: Any) -> Any:
    """The trainer's model without its accelerate/DDP wrapper: the weights the optimizer moves."""
    return trainer.accelerator.unwrap_model(trainer.model)


__all__ = [
    "TRACE_FIELDS",
    "KernelRollouts",
    "completions",
    "reward_funcs",
    "task_dataset",
]
