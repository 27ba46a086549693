"""The ``kernel-bridge`` command: reason in the terminal, inspect traces, export them.

Every failure a user can cause (a bad option, an unknown model, a missing file) ends in one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from kernel_bridge import __version__
from kernel_bridge.errors import UserError
from kernel_bridge.settings import (
    MAX_STEPS,
    MAX_TOKENS,
    PROFILE,
    REASONING_EFFORTS,
    STEP_TIMEOUT,
    TIME_LIMIT,
    count_option,
    default_trace_path,
    seconds_option,
)


class UsageError(UserError):
    """A problem with what the user asked for; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kernel-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kernel-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    reason = sub.add_parser("reason", help="think about a question with a live Python kernel")
    reason.add_argument("question", help="the question, in quotes")
    reason.add_argument(
        "--model",
        "-m",
        default=None,
        help="model string: 'local' (the embedded model), 'hf:ID_OR_PATH', 'scripted:PATH'; "
        "default: $KERNEL_BRIDGE_MODEL, else the config file, else 'local'",
    )
    reason.add_argument(
        "--profile",
        default=PROFILE,
        help="code-block format of the model: auto (from its chat template), markdown, retool, "
        "plain",
    )
    reason.add_argument(
        "--reasoning-effort",
        choices=REASONING_EFFORTS,
        default=None,
        help="how much an API model thinks (LiteLLM's reasoning_effort)",
    )
    reason.add_argument(
        "--trace",
        type=Path,
        default=None,
        help=f"JSONL file the trace is appended to (default: {default_trace_path()})",
    )
    reason.add_argument(
        "--max-steps", type=count_option, default=MAX_STEPS, help="most code blocks to run"
    )
    reason.add_argument(
        "--max-tokens", type=count_option, default=MAX_TOKENS, help="most model tokens"
    )
    reason.add_argument(
        "--timeout", type=seconds_option, default=STEP_TIMEOUT, help="seconds per code block"
    )
    reason.add_argument(
        "--time-limit", type=seconds_option, default=TIME_LIMIT, help="seconds for the whole run"
    )
    reason.add_argument(
        "--sandbox",
        action="store_true",
        help="run the model's code in a sandboxed kernel (bubblewrap: no network, a read-only "
        "system, its own processes; docs/security.md)",
    )
    reason.add_argument("--no-color", action="store_true", help="plain text output")
    reason.add_argument(
        "--tools",
        default=None,
        help="tools installed in the kernel, comma-separated: the toolsets finance and "
        "documents, and your own as module:attribute or file.py:attribute",
    )
    reason.add_argument(
        "--cutoff",
        default=None,
        metavar="YYYY-MM-DD",
        help="data cutoff of the finance tools: nothing after this date reaches the model",
    )
    reason.add_argument(
        "--authorized-imports",
        default=None,
        help="comma-separated modules the model's code may import (a guard, not a sandbox)",
    )

    traces = sub.add_parser("traces", help="look at saved traces")
    traces_sub = traces.add_subparsers(dest="traces_command", required=True, parser_class=_Parser)
    show = traces_sub.add_parser("show", help="print the traces of a JSONL file")
    show.add_argument("file", type=Path)
    show.add_argument("--id", default=None, help="only this trace")
    show.add_argument("--no-color", action="store_true")

    export = sub.add_parser("export", help="turn a trace into a notebook")
    export.add_argument("file", type=Path, help="JSONL trace file")
    export.add_argument("--to", type=Path, required=True, dest="out", help="notebook to write")
    export.add_argument("--id", default=None, help="which trace (default: the last one)")

    setup = sub.add_parser(
        "setup-ipython",
        help="load %%%%reason in every IPython session and notebook kernel (a startup file)",
        description="Writes a startup file into the IPython profile ($IPYTHONDIR/profile_NAME/"
        "startup/), so %%%%reason works in every notebook kernel, also after a restart, without "
        "%%load_ext kernel_bridge.",
    )
    setup.add_argument("--profile", default="default", help="IPython profile (default: default)")
    setup.add_argument("--remove", action="store_true", help="delete the startup file again")

    train = sub.add_parser("train", help="GRPO training on kernel traces (docs/training.md)")
    train.add_argument("config", type=Path, help="TOML training config, e.g. configs/smoke.toml")
    train.add_argument("--steps", type=int, default=None, help="train until this step")
    train.add_argument("--out-dir", default=None, help="where metrics and checkpoints go")
    train.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in out_dir"
    )

    evaluate = sub.add_parser(
        "eval",
        help="held-out accuracy and tool use of a training run, or of models side by side",
        description="Greedy runs of held-out tasks. With --model (repeatable): every model on "
        "the same tasks in one run, and a table side by side, e.g. "
        "kernel-bridge eval --model local-base --model local. Without: the config's model and "
        "its latest checkpoint.",
    )
    evaluate.add_argument(
        "config", type=Path, nargs="?", default=None, help="TOML training config (optional)"
    )
    evaluate.add_argument(
        "--model",
        action="append",
        default=None,
        dest="models",
        help="a model string to evaluate (repeat to compare): local, local-base, local:RUN_DIR, "
        "hf:…, openai/…",
    )
    evaluate.add_argument(
        "--tasks", default=None, help="a JSONL task file, or 'builtin' (default: the config's)"
    )
    evaluate.add_argument("--tiers", default=None, help="built-in tiers, e.g. 1,2 (default: 1,2)")
    evaluate.add_argument(
        "--split",
        choices=("heldout", "train", "all"),
        default="heldout",
        help="which tasks of the set (default: heldout)",
    )
    evaluate.add_argument("--max-tasks", type=int, default=None, help="at most this many tasks")
    evaluate.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="checkpoint directory (default: the latest in out_dir, else the untrained model)",
    )
    evaluate.add_argument("--out-dir", default=None, help="where checkpoints and results are")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kernel-bridge`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "reason":
            return _reason(args)
        if args.command == "traces":
            return _traces_show(args)
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "setup-ipython":
            return _setup_ipython(args)
        return _export(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (UserError, OSError) as e:  # options, configs, models, files, kernels: one line
        return _fail(str(e))
    except Exception:  # anything else is ours to fix: the whole traceback, and say so
        import traceback

        traceback.print_exc()
        _say(
            "bug",
            f"this is a bug in kernel-bridge {__version__}, not in your input; please report it "
            "with the traceback above and the command you ran",
        )
        return 70  # EX_SOFTWARE


def _setup_ipython(args: argparse.Namespace) -> int:
    path = setup_ipython(args.profile, remove=args.remove)
    if args.remove:
        print(f"removed {path}: %%reason needs %load_ext kernel_bridge again")
    else:
        print(f"wrote {path}: %%reason is loaded in every new IPython session and kernel")
    return 0


STARTUP_FILE = "50-kernel-bridge.py"
_STARTUP_CODE = """\
# Written by `kernel-bridge setup-ipython`: %%reason in every IPython session and notebook kernel,
# also after a restart. `kernel-bridge setup-ipython --remove` deletes this file.
def _load_kernel_bridge():
    shell = get_ipython()  # noqa: F821 - IPython's startup namespace has it
    try:
        shell.extension_manager.load_extension("kernel_bridge")
    except ImportError:
        pass  # an environment without kernel-bridge shares this profile


_load_kernel_bridge()
del _load_kernel_bridge
"""


def setup_ipython(profile: str = "default", remove: bool = False) -> Path:
    """Load ``%%reason`` in every IPython session and kernel of ``profile`` (a startup file in its
    ``startup/`` folder, under ``$IPYTHONDIR``); ``remove`` deletes it. Returns the file's path."""
    from IPython.paths import get_ipython_dir

    path = Path(get_ipython_dir()) / f"profile_{profile}" / "startup" / STARTUP_FILE
    if remove:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_STARTUP_CODE, encoding="utf-8")
    return path


def _fail(message: str) -> int:
    _say("error", message)
    return 2


def _say(kind: str, message: str) -> None:
    """One line on stderr, control characters made visible (messages may quote model text)."""
    from kernel_bridge.render import visible

    print(f"kernel-bridge: {kind}: {visible(message)}", file=sys.stderr)


# -- reason -----------------------------------------------------------------------------------

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def set_non_dumpable() -> bool:
    """Make this process non-dumpable (Linux ``prctl(PR_SET_DUMPABLE, 0)``); True if it took.

    What it protects: this process's environment (an API key given to the command alone) and
    memory from its kernels, whose code runs as the same user: ``/proc/<pid>/environ`` and ``mem``
    of a non-dumpable process need ``CAP_SYS_PTRACE``. What not: a kernel running as root (it has
    that capability), and the keys that other processes of the user hold (the shell that exported
    them, a notebook server). Side effects: no core dump, and debuggers and profilers (gdb,
    py-spy) of the same user cannot attach to this process (ptrace is refused); root's still can.
    The kernels stay dumpable (exec resets it). Elsewhere than Linux, or where the call fails,
    nothing changes.
    """
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # no libc with prctl in this process
        return False


def _reason(args: argparse.Namespace) -> int:
    from kernel_bridge.loading import quiet_libraries
    from kernel_bridge.runspec import RunSpec, RunSpecError, check_model
    from kernel_bridge.samplers import make_sampler

    set_non_dumpable()  # before any kernel starts: its code cannot read this environment
    if not args.question.strip():
        raise UsageError('the question is empty: write it in quotes, e.g. reason "What is 2**100?"')
    try:
        check_model(args.model)
        spec = RunSpec.build(
            max_steps=args.max_steps,
            max_tokens=args.max_tokens,
            timeout=args.timeout,
            time_limit=args.time_limit,
            trace=args.trace,
            profile=args.profile,
            tools=args.tools,
            cutoff=args.cutoff,
            authorized_imports=args.authorized_imports,
            sandbox=args.sandbox,
        )
    except RunSpecError as e:
        raise UsageError(str(e)) from None
    # The libraries' warnings and log lines (transformers' deprecations, tqdm's) are not the
    # user's: no code of theirs runs in this process (blocks run in the kernel's).
    with quiet_libraries(all_threads=True) as quiet:
        sampler = make_sampler(args.model, reasoning_effort=args.reasoning_effort)
        quiet.cover()  # the loggers of the libraries the load imported
        return _run_reasoner(args, spec, sampler)


def _run_reasoner(args: argparse.Namespace, spec: Any, sampler: Any) -> int:
    """Run the question with ``sampler``, shown on the terminal; the exit status."""
    from kernel_bridge.events import one_line
    from kernel_bridge.render import TerminalRenderer

    renderer = TerminalRenderer(color=not args.no_color, error_detail=False)
    reasoner = spec.reasoner(sampler)

    ended_by: list[int] = []  # SIGTERM or SIGHUP (a closed terminal), if one ended the run

    async def go() -> Any:
        task = asyncio.current_task()
        assert task is not None

        def end(signum: int) -> None:  # like Ctrl-C: cancel the run, which saves its trace
            if not ended_by:
                ended_by.append(signum)
                task.cancel()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, end, signum)
        try:
            async for event in reasoner.stream(args.question):
                renderer.handle(event)
        finally:
            renderer.close()
            await reasoner.close()
        return reasoner.trace

    try:
        trace = asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            if reasoner.saved_to is not None:
                renderer.note(f"interrupted; trace saved to {reasoner.saved_to}")
            _unsaved(reasoner)
        return 128 + ended_by[0] if ended_by else 130
    if reasoner.saved_to is not None:
        renderer.note(f"trace {trace.id} saved to {reasoner.saved_to}")
    if trace.finish_reason == "error":  # the model or its API failed: one line, on stderr
        _say("error", one_line(trace.error or "the run failed"))
    if _unsaved(reasoner):
        return 1
    return 0 if trace.finish_reason == "answer" else 1


def _unsaved(reasoner: Any) -> bool:
    """Say on stderr where the trace went if its store could not be written (e.g. disk full)."""
    problem = reasoner.save_problem
    if problem is None:
        return False
    _say("error", problem)
    return True


# -- traces show / export ---------------------------------------------------------------------


def _load(path: Path, trace_id: str | None) -> list[Any]:
    from kernel_bridge.trace import TraceStore, load_traces

    # A run killed before its first line was written has only its checkpoint: still a trace file.
    if not path.exists() and not any(TraceStore(path).checkpoint_dir.glob("*.json")):
        raise UsageError(f"no trace file at {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a trace file")
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        traces = load_traces(path)
    for warning in skipped:  # corrupt or partial lines: the rest of the file is still read
        _say("warning", str(warning.message))
    if trace_id is not None:
        traces = [t for t in traces if t.id == trace_id]
        if not traces:
            raise UsageError(f"no trace with id {trace_id!r} in {path}")
    if not traces:
        raise UsageError(f"{path} holds no traces")
    return traces


def _traces_show(args: argparse.Namespace) -> int:
    from kernel_bridge.render import TerminalRenderer

    renderer = TerminalRenderer(color=not args.no_color)
    for trace in _load(args.file, args.id):
        renderer.show_trace(trace)
    return 0


def _export(args: argparse.Namespace) -> int:
    import nbformat

    trace = _load(args.file, args.id)[-1]
    nb = trace.to_notebook()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(args.out))
    print(f"wrote {args.out} ({len(nb.cells)} cells) from trace {trace.id}")
    return 0


# -- train / eval -----------------------------------------------------------------------------


def _training_config(args: argparse.Namespace, **overrides: Any) -> Any:
    from kernel_bridge.training.config import load_config

    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    return load_config(args.config, **overrides)


def _train(args: argparse.Namespace) -> int:
    from kernel_bridge.loading import quiet_libraries
    from kernel_bridge.training.trainer import run

    overrides: dict[str, Any] = {"resume": True} if args.resume else {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    config = _training_config(args, **overrides)
    try:
        with quiet_libraries(all_threads=True):  # as for reason: the blocks run in kernels
            history = run(config)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with: kernel-bridge train {args.config} --resume",
            file=sys.stderr,
        )
        return 130
    out = Path(config.out_dir)
    if history:
        last = history[-1]
        print(f"step {last['step']}: reward {last['reward']:.3f}, tool use {last['tool_use']:.2f}")
    print(f"metrics: {out / 'metrics.jsonl'}; checkpoints: {out / 'checkpoints'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from kernel_bridge.loading import quiet_libraries

    with quiet_libraries(all_threads=True):  # as for reason: the blocks run in kernels
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    if args.models:
        return _compare(args)
    if args.config is None:
        raise UsageError("give a training config, or models to compare with --model")
    from kernel_bridge.training.trainer import run_eval

    config = _training_config(args)
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise UsageError(f"no checkpoint directory at {args.checkpoint}")
    metrics = run_eval(config, args.checkpoint)
    keys = ["tasks", "correct", "reward", "tool_use", "code_steps", "tool_error_rate", "answered"]
    keys += sorted(k for k in metrics if k.startswith("tier"))
    for key in keys:
        if key in metrics:
            value = metrics[key]
            print(f"{key:>16}  {value:.3f}" if isinstance(value, float) else f"{key:>16}  {value}")
    print(f"traces: {Path(config.out_dir) / 'eval_traces.jsonl'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Every ``--model`` on the same tasks, greedy, in one table (``training/evaluate.py``)."""
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.evaluate import compare, comparison_table
    from kernel_bridge.training.rewards import Rewards
    from kernel_bridge.training.rollout import RolloutSettings
    from kernel_bridge.training.tasks import builtin_tasks, hold_out, load_tasks

    if args.config is not None:
        config = _training_config(args)
    else:
        config = TrainConfig(out_dir=args.out_dir or "runs/eval", tiers=[1, 2])
    tasks_from = args.tasks or config.tasks
    if tasks_from == "builtin":
        try:
            tiers = [int(t) for t in args.tiers.split(",")] if args.tiers else config.tiers
        except ValueError:
            raise UsageError(f"--tiers takes numbers like 1,2, got {args.tiers!r}") from None
        tasks = builtin_tasks(tiers)
    else:
        tasks = hold_out(load_tasks(tasks_from), config.heldout_fraction)
    if args.split != "all":
        tasks = [t for t in tasks if t.split == args.split]
    if args.max_tasks is not None:
        if args.max_tasks < 1:
            raise UsageError(f"--max-tasks must be at least 1, got {args.max_tasks}")
        tasks = tasks[: args.max_tasks]
    if not tasks:
        raise UsageError(f"no {args.split} tasks in {tasks_from}")
    settings = RolloutSettings.from_config(config)
    out = Path(config.out_dir)
    results = asyncio.run(
        compare(
            args.models,
            tasks,
            settings,
            Rewards(dict(config.rewards)),
            pool_size=config.pool_size,
            out_dir=out,
        )
    )
    print(comparison_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"traces: {out / 'eval_traces.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
