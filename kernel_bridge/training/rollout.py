"""Rollouts: G runs of the same ``Reasoner`` per task, each with a fresh kernel from a pool.

A rollout is an ordinary run: the sampler is the policy being trained, the kernel a fresh one from
a ``KernelPool`` (taken when the first block runs, so a run that writes no code never waits for
one), and the result a ``Trace`` with token ids, logprobs and the model/tool mask. Rollouts of a
step run concurrently: while one waits for its kernel, another generates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernel_bridge.errors import UserError
from kernel_bridge.execution import ExecutionResult, Kernel, KernelPool
from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers import Sampler
from kernel_bridge.trace import Trace
from kernel_bridge.training.rewards import RewardResult
from kernel_bridge.training.tasks import Task


class ToolsUnavailableError(UserError, RuntimeError):
    """A task asks for a toolset that this installation cannot provide."""


@dataclass
class RolloutSettings:
    """How each rollout runs: limits, prompt, code profile, how many run at once, and whether
    its kernel is sandboxed (None: wherever bubblewrap works on this machine)."""

    limits: Limits = field(default_factory=Limits)
    profile: str = "markdown"
    system_prompt: str = "default"  # "default", "none", or the text of a system prompt
    concurrency: int = 0  # rollouts running at once (0: all of a step)
    sandbox: bool | None = None

    def kernel_options(self) -> dict[str, Any]:
        """The options of every rollout's ``Kernel`` (``KernelPool(size, **options)``)."""
        sandbox = self.sandbox
        if sandbox is None:
            from kernel_bridge.execution.sandbox import sandbox_problem

            sandbox = sandbox_problem() is None
        return {"sandbox": sandbox}

    @classmethod
    def from_config(cls, config: Any) -> RolloutSettings:
        """The settings a ``TrainConfig`` names: its limits, profile and system prompt."""
        return cls(
            limits=Limits(
                max_steps=config.max_code_steps,
                max_tokens=config.max_tokens,
                step_timeout=config.step_timeout,
                time_limit=config.rollout_time_limit,
            ),
            profile=config.profile,
            system_prompt=config.system_prompt,
        )


@dataclass
class Rollout:
    """One completion of one task: its trace, which group (prompt) it belongs to, its reward."""

    task: Task | None  # None for a recorded trace that no task asks
    group: int
    trace: Trace
    reward: RewardResult | None = None


class PoolKernel:
    """An ``Executor`` that takes a fresh kernel from ``pool`` on first use and returns it on close.

    The pool shuts a returned kernel down and starts a new one, so no state crosses rollouts.
    """

    def __init__(self, pool: KernelPool) -> None:
        self.pool = pool
        self.kernel: Kernel | None = None
        self._lease: Any = None

    @property
    def started(self) -> bool:
        return True  # nothing to start: the pool's kernels are warm

    async def start(self) -> PoolKernel:
        return self

    async def _take(self) -> Kernel:
        if self.kernel is None:
            self._lease = self.pool.acquire()
            self.kernel = await self._lease.__aenter__()
        return self.kernel

    async def execute(
        self, code: str, timeout: float | None = None, on_output: Callable[..., Any] | None = None
    ) -> ExecutionResult:
        kernel = await self._take()
        return await kernel.execute(code, timeout=timeout, on_output=on_output)

    async def close(self) -> None:
        lease, self._lease, self.kernel = self._lease, None, None
        if lease is not None:
            await lease.__aexit__(None, None, None)


def prompt_options(system_prompt: str) -> dict[str, Any]:
    """Reasoner arguments for ``system_prompt``: "default", "none", or a text (no example)."""
    if system_prompt == "default":
        return {}
    if system_prompt == "none":
        return {"system_prompt": "", "examples": []}
    return {"system_prompt": system_prompt, "examples": []}


def task_tools(task: Task) -> Any:
    """The toolbox a task asks for (``task.tools`` with its ``cutoff``), or None.

    The finance toolset answers from its offline sample data (the same monthly closes the
    market tasks' references are computed from), never from a live fetch.
    """
    if task.tools is None:
        return None
    try:
        from kernel_bridge.tools import toolset
    except ImportError as e:
        raise ToolsUnavailableError(
            f"task {task.id!r} needs the {task.tools!r} toolset, but kernel_bridge.tools cannot "
            f"be imported ({e}); leave out the tiers that use tools (tiers = [1, 2])"
        ) from None
    options: dict[str, Any] = {"offline": True} if task.tools == "finance" else {}
    if task.cutoff:
        options["cutoff"] = task.cutoff
    return toolset(task.tools, **options)


async def rollout(
    sampler: Sampler,
    pool: KernelPool,
    task: Task | None,
    settings: RolloutSettings,
    question: str | list[dict[str, Any]] | None = None,
) -> Trace:
    """Run ``question`` (default ``task.asked``: the question, and its hint if it has one) once
    through a ``Reasoner`` with a fresh kernel; return the trace.

    A task with tools takes its kernel at once (the tools are installed before the first block);
    one without takes it only if the model writes a block.
    """
    if question is None:
        if task is None:
            raise ValueError("a rollout needs a task or a question")
        question = task.asked
    options = prompt_options(settings.system_prompt)
    tools = task_tools(task) if task is not None else None
    if tools is not None:
        async with pool.acquire() as kernel:
            reasoner = Reasoner(
                sampler,
                kernel,
                profile=settings.profile,
                limits=settings.limits,
                tools=tools,
                **options,
            )
            return await reasoner.run(question)
    lazy = PoolKernel(pool)
    try:
        reasoner = Reasoner(
            sampler, lazy, profile=settings.profile, limits=settings.limits, **options
        )
        return await reasoner.run(question)
    finally:
        await lazy.close()


async def collect_rollouts(
    sampler: Sampler,
    pool: KernelPool,
    tasks: Sequence[Task],
    group_size: int,
    settings: RolloutSettings,
) -> list[Rollout]:
    """``group_size`` rollouts of every task, concurrently; group ``i`` is ``tasks[i]``."""
    limit = settings.concurrency or len(tasks) * group_size
    gate = asyncio.Semaphore(limit)

    async def one(group: int, task: Task) -> Rollout:
        async with gate:
            return Rollout(task, group, await rollout(sampler, pool, task, settings))

    async with asyncio.TaskGroup() as runs:
        jobs = [
            runs.create_task(one(group, task))
            for group, task in enumerate(tasks)
            for _ in range(group_size)
        ]
    return [job.result() for job in jobs]
