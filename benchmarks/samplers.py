"""Embedded-model figures: load times, time to first token, decode speed, resume cost.

    python benchmarks/samplers.py [--quick] [--json PATH]

"First load" assembles and converts the GGUF into a fresh cache directory (what a new user waits
for once); "cached load" reads the conversion. Resume cost compares a tool step handled with the
sampler's KV cache (only the new tokens prefilled) against a fresh sampler that re-prefills the
whole ~1,500-token prefix (what a restart-per-step loop does), in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from kernel_bridge.samplers import SampleRequest
from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
from kernel_bridge.trace import Segment


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - t, value


async def first_token_and_decode(
    sampler: TransformersSampler,
    messages: list[dict[str, Any]],
    n: int,
    segments: list[Segment] | None = None,
) -> dict[str, float]:
    """Seconds to the first delta, then decode tokens per second over ``n`` tokens."""
    request = SampleRequest(messages, segments or [], max_tokens=n)
    t0 = time.perf_counter()
    first = None
    count = 0
    async for delta in sampler.stream(request):
        count += len(delta.token_ids or [])
        if first is None and delta.token_ids:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return {
        "ttft_s": first - t0,
        "decode_tok_s": (count - 1) / (end - first),
        "tokens": count,
        "prefilled": sampler.prefilled_last,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens, no first-load run")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    from kernel_bridge.embedded import load_embedded

    results: dict[str, Any] = {"threads": __import__("torch").get_num_threads()}
    if not args.quick:
        with tempfile.TemporaryDirectory() as fresh:
            os.environ["KERNEL_BRIDGE_CACHE"] = fresh
            results["first_load_s"], _ = timed(load_embedded)
        os.environ.pop("KERNEL_BRIDGE_CACHE")
    load_embedded()  # make sure the user cache holds the conversion
    loads = [timed(load_embedded)[0] for _ in range(1 if args.quick else 3)]
    results["cached_load_s"] = statistics.median(loads)
    model, tokenizer = load_embedded()
    results["rss_mib"] = psutil.Process().memory_info().rss / 2**20

    sampler = TransformersSampler(model, tokenizer, config=GenerationConfig(max_new_tokens=4096))
    messages = [
        {
            "role": "user",
            "content": "Write a Python function that checks whether a "
            "number is prime, then explain it in detail.",
        }
    ]
    n = 32 if args.quick else 128
    results["generation"] = asyncio.run(first_token_and_decode(sampler, messages, n))

    # Resume after a tool step with a ~1,500-token prefix: KV reuse vs re-prefilling it all.
    prefix_text = "The kernel printed a long table of values that the model now reads. " * 110
    model_ids = sampler.encode(prefix_text)
    tool_text = "```output\n" + "\n".join(str(i * i) for i in range(40)) + "\n```\n"
    segments = [
        Segment("model", prefix_text, token_ids=model_ids),
        Segment("tool", tool_text, token_ids=sampler.encode(tool_text)),
    ]
    prompt = sampler.context_ids(SampleRequest(messages, segments))
    # Warm the cache with the prefix as the previous call would have left it.
    asyncio.run(first_token_and_decode(sampler, messages, 1, segments[:1]))
    reuse = asyncio.run(first_token_and_decode(sampler, messages, 8, segments))
    fresh = TransformersSampler(model, tokenizer)
    restart = asyncio.run(first_token_and_decode(fresh, messages, 8, segments))
    results["resume"] = {"context_tokens": len(prompt), "reuse": reuse, "restart": restart}

    g = results["generation"]
    print("| figure | value |")
    print("|---|---|")
    if "first_load_s" in results:
        print(f"| first load (assemble + verify + convert) | {results['first_load_s']:.1f} s |")
    print(f"| cached load (median of {len(loads)}) | {results['cached_load_s']:.1f} s |")
    print(f"| RSS after load | {results['rss_mib']:.0f} MiB |")
    print(f"| time to first token (short prompt) | {g['ttft_s'] * 1000:.0f} ms |")
    print(
        f"| decode ({g['tokens']} tokens, {results['threads']} threads) | "
        f"{g['decode_tok_s']:.1f} tok/s |"
    )
    print(
        f"| resume after a tool step, {len(prompt)}-token context: tokens prefilled | "
        f"KV reuse {reuse['prefilled']} vs restart {restart['prefilled']} |"
    )
    print(
        f"| resume: time to first token | KV reuse {reuse['ttft_s'] * 1000:.0f} ms vs restart "
        f"{restart['ttft_s'] * 1000:.0f} ms ({restart['ttft_s'] / reuse['ttft_s']:.1f}×) |"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
