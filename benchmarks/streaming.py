"""What a ``%%reason`` run sends to a Jupyter client, against a display-handle update loop.

A scripted assistant turn of about 200,000 characters (thinking prose and code blocks that print)
runs through ``%%reason`` in a real kernel. A raw iopub subscriber, connected like any client,
counts every message the cell caused and its bytes as received (all frames). The same trace is then
replayed in the same kernel by a naive renderer that keeps one display handle and updates it with
the whole text so far after every delta (the scripted model's 16-character deltas; the tool
outputs arrive whole), which is what a ``display(..., display_id=True)`` + ``update`` loop does.

Then 50 trivial blocks run through ``%%reason`` (shared namespace, then ``--isolated``, in a
folder of 10,000 data files as a notebook's may be) and through the CLI: the time per step,
from the first block's start to the last block's end over the trace's steps. Last, the cold
start: in a fresh kernel with the magic loaded, the time from sending a ``%%reason`` cell with a
model that still has to load (``--cold-model``, the embedded ``local`` by default) to the first
output a client shows, against ``print('hello')`` in another fresh kernel.

Reported for each: total iopub bytes ÷ trace size (the trace's JSON), messages, and the peak
messages/s and bytes/s over any 1 s window, against the Jupyter server's defaults
(``iopub_msg_rate_limit`` 1,000 msgs/s, ``iopub_data_rate_limit`` 1,000,000 bytes/s; the server
averages over a 3 s window, so a 1 s peak is the stricter test). Run
``python benchmarks/streaming.py`` (about a minute); ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.manager import start_new_kernel
from nbformat.v4 import output_from_msg

MSG_RATE_LIMIT = 1000  # jupyter_server's ZMQChannelsHandler defaults
DATA_RATE_LIMIT = 1_000_000
DELIMITER = b"<IDS|MSG>"

# Thinking prose is drawn from these words with a fixed seed: text that compresses about as well
# as a model's thinking does (gzip: about 3×), not one sentence repeated (which gzip shrinks 50×
# and would flatter every packed figure).
VOCABULARY = """let me check the value first then compute each term and compare it with
    what the question asks so the sum of all divisors below that bound should
    be smaller than expected because every prime factor appears once in this list but
    twice in the other one which means the loop over rows must skip duplicates
    before it counts them now I need the largest result after sorting by the
    second column where ties keep their order a quick test on small inputs shows
    whether the formula holds otherwise the recursion is wrong at the base case maybe
    a table of squares and cubes makes the pattern clear since its growth is
    polynomial not exponential the answer must be an integer so round only at the
    end and print it"""
WORDS = VOCABULARY.split()


def prose(rng: random.Random, chars: int) -> str:
    """About ``chars`` characters of sentences of random words and numbers, ending in a newline."""
    out: list[str] = []
    size = 0
    while size < chars:
        words = [
            str(rng.randint(2, 99_999)) if rng.random() < 0.08 else rng.choice(WORDS)
            for _ in range(rng.randint(6, 22))
        ]
        sentence = " ".join(words).capitalize() + rng.choice((". ", ". ", ", so ", "? ", ".\n"))
        out.append(sentence)
        size += len(sentence)
    return "".join(out).rstrip() + "\n"


def make_script(chars: int, blocks: int) -> str:
    """An assistant turn of about ``chars`` characters: prose, then ``blocks`` printing blocks."""
    code = (
        "rows = [(k, k * k, k**3) for k in range({start}, {start} + 40)]\nfor row in rows:\n"
        "    print(*row)\n"
    )
    output_chars = 40 * 14  # what each block prints, roughly
    per_block = max(100, (chars - blocks * (output_chars + 110)) // blocks)
    rng = random.Random(0)
    parts = ["<think>\n"]
    for i in range(blocks):
        parts.append(prose(rng, per_block))
        parts.append(f"```python\n{code.format(start=i * 40)}```\n")
    parts.append(
        f"That covers every block.\n</think>\n<answer>All **{blocks}** blocks ran.</answer>"
    )
    return "".join(parts)


@dataclass
class Figures:
    """What one cell sent, as a client received it."""

    name: str
    messages: int
    bytes: int
    seconds: float
    trace_bytes: int
    peak_msgs_per_s: int = 0
    peak_bytes_per_s: int = 0
    by_type: dict[str, list[int]] = field(default_factory=dict)  # msg_type → [count, bytes]

    @property
    def ratio(self) -> float:
        return self.bytes / self.trace_bytes

    @property
    def over_limits(self) -> bool:
        return self.peak_msgs_per_s > MSG_RATE_LIMIT or self.peak_bytes_per_s > DATA_RATE_LIMIT


class IopubCounter:
    """A raw SUB socket on the kernel's iopub channel; records (time, bytes, type, parent id)."""

    def __init__(self, url: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # never drop on our side
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(url)
        self.records: list[tuple[float, int, str, str, str]] = []
        self.outputs: dict[str, list[Any]] = {}  # the cell's outputs as a notebook saves them
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop:
            if not poller.poll(100):
                continue
            frames = self.sock.recv_multipart(copy=True)
            t = time.monotonic()
            size = sum(len(f) for f in frames)
            i = frames.index(DELIMITER)
            header = json.loads(frames[i + 2])
            parent = json.loads(frames[i + 3])
            kind = header["msg_type"]
            saved = kind in ("stream", "display_data", "execute_result", "error", "clear_output")
            content = json.loads(frames[i + 5]) if kind == "status" or saved else {}
            state = content.get("execution_state", "")
            with self._lock:
                self.records.append((t, size, kind, parent.get("msg_id", ""), state))
                if saved:
                    outputs = self.outputs.setdefault(parent.get("msg_id", ""), [])
                    if kind == "clear_output":
                        outputs.clear()
                    else:
                        outputs.append(output_from_msg({"header": header, "content": content}))

    def saved_cell_bytes(self, msg_id: str) -> int:
        """Bytes of the cell's outputs in the saved notebook (nbformat's JSON, streams merged)."""
        with self._lock:
            outputs = list(self.outputs.get(msg_id, []))
        merged: list[Any] = []
        for out in outputs:
            last = merged[-1] if merged else None
            if out.output_type == "stream" and last and last.get("name") == out.name:
                last["text"] += out.text
            else:
                merged.append(out)
        return len(json.dumps(merged, indent=1, ensure_ascii=False))

    def wait_idle(self, msg_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(r[3] == msg_id and r[4] == "idle" for r in self.records):
                    return
            time.sleep(0.01)
        raise TimeoutError(f"no idle status for {msg_id} within {timeout} s")

    def of(self, msg_id: str) -> list[tuple[float, int, str, str, str]]:
        with self._lock:
            return [r for r in self.records if r[3] == msg_id]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close(linger=0)
        self.ctx.term()


def run_cell(kc: Any, counter: IopubCounter, code: str, timeout: float) -> str:
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    counter.wait_idle(msg_id, timeout)
    return msg_id


def figures(
    name: str, records: list[tuple[float, int, str, str, str]], trace_bytes: int
) -> Figures:
    times = [r[0] for r in records]
    sizes = [r[1] for r in records]
    f = Figures(name, len(records), sum(sizes), times[-1] - times[0], trace_bytes)
    j = 0
    window_bytes = 0
    for i, t in enumerate(times):  # sliding 1 s windows, each starting at a message
        while j < len(times) and times[j] < t + 1.0:
            window_bytes += sizes[j]
            j += 1
        f.peak_msgs_per_s = max(f.peak_msgs_per_s, j - i)
        f.peak_bytes_per_s = max(f.peak_bytes_per_s, window_bytes)
        window_bytes -= sizes[i]
    counts: Counter[str] = Counter()
    volume: Counter[str] = Counter()
    for r in records:
        counts[r[2]] += 1
        volume[r[2]] += r[1]
    f.by_type = {k: [counts[k], volume[k]] for k in sorted(counts, key=lambda k: -volume[k])}
    return f


STEP_BLOCKS = 50


def per_step(traces: Path) -> float:
    """Seconds per step of the last trace: first block's start to last block's end, ÷ steps."""
    steps = json.loads(traces.read_bytes().splitlines()[-1])["steps"]
    end = steps[-1]["started"] + steps[-1]["duration_s"]
    return (end - steps[0]["started"]) / len(steps)


def step_times(kc: Any, counter: IopubCounter, work: Path) -> dict[str, float]:
    """Per-step time of ``STEP_BLOCKS`` trivial blocks: the magic shared and isolated (beside
    10,000 files), and the CLI."""
    import subprocess

    script = work / "trivial.txt"
    blocks = "".join(f"```python\n{i}\n```\n" for i in range(STEP_BLOCKS))
    script.write_text(f"<think>\n{blocks}</think>\n<answer>done</answer>", encoding="utf-8")
    for d in range(100):  # a notebook folder with data in it
        (work / "data" / f"d{d}").mkdir(parents=True, exist_ok=True)
        for i in range(100):
            (work / "data" / f"d{d}" / f"f{i}").touch()
    times = {}
    for name, option in (("magic (shared)", ""), ("magic (--isolated)", "--isolated")):
        traces = work / f"steps-{option or 'shared'}.jsonl"
        options = f"--model scripted:{script} --trace {traces} --max-steps {STEP_BLOCKS + 1}"
        run_cell(kc, counter, f"%%reason {option} {options}\nCount.", 300)  # warm (a sidecar)
        run_cell(kc, counter, f"%%reason {option} {options}\nCount.", 300)
        times[name] = per_step(traces)
    traces = work / "steps-cli.jsonl"
    subprocess.run(
        [
            *(sys.executable, "-m", "kernel_bridge.cli", "reason", "Count."),
            *("--model", f"scripted:{script}", "--trace", str(traces)),
            *("--max-steps", str(STEP_BLOCKS + 1)),
        ],
        env={**os.environ, "KERNEL_BRIDGE_HOME": str(work)},
        capture_output=True,
        check=True,
        timeout=300,
    )
    times["CLI"] = per_step(traces)
    return times


VISIBLE = ("stream", "display_data", "execute_result", "error")


def first_visible_line(cell: str, work: Path, timeout: float = 600) -> float:
    """Seconds from sending ``cell`` to a fresh kernel (the magic loaded, nothing else run) to
    the first output a client shows for it; the cell then runs to its end."""
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(work)}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(work))
    info = km.get_connection_info()
    counter = IopubCounter(f"{info['transport']}://{info['ip']}:{info['iopub_port']}")
    try:
        while True:
            try:
                run_cell(kc, counter, "%load_ext kernel_bridge", 10)
                break
            except (TimeoutError, queue.Empty):
                continue
        sent = time.monotonic()
        msg_id = kc.execute(cell)
        first = None
        deadline = sent + timeout
        while first is None and time.monotonic() < deadline:
            shown = [r[0] for r in counter.of(msg_id) if r[2] in VISIBLE]
            first = shown[0] if shown else None
            time.sleep(0.005)
        counter.wait_idle(msg_id, timeout)
        if first is None:
            raise TimeoutError(f"no output within {timeout} s")
        return first - sent
    finally:
        counter.close()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


NAIVE_CELL = """
from IPython.display import Markdown, display
from kernel_bridge.trace import load_traces
_trace = load_traces({path!r})[-1]
_handle = display(Markdown(""), display_id=True)
_text = ""
for _segment in _trace.segments:
    _step = {delta} if _segment.kind == "model" else len(_segment.text)
    for _i in range(0, len(_segment.text), _step):
        _text += _segment.text[_i : _i + _step]
        _handle.update(Markdown(_text))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=200_000, help="size of the assistant turn")
    parser.add_argument("--blocks", type=int, default=40, help="code blocks in it")
    parser.add_argument("--delta", type=int, default=16, help="characters per naive update")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "--cold-model",
        default="local",
        help="the model of the cold-start figure (its first %%%%reason in a fresh kernel); "
        "'' to skip it",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kb-streaming-"))
    script = work / "script.txt"
    script.write_text(make_script(args.chars, args.blocks), encoding="utf-8")
    traces = work / "traces.jsonl"
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(work)}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(work))
    info = km.get_connection_info()
    counter = IopubCounter(f"{info['transport']}://{info['ip']}:{info['iopub_port']}")
    try:
        while True:  # a SUB socket only sees messages once it is connected: wait for it
            try:
                run_cell(kc, counter, "%load_ext kernel_bridge", 10)
                break
            except (TimeoutError, queue.Empty):
                continue
        limit = f"--max-steps {args.blocks + 1} --max-tokens {args.chars * 2} --time-limit 3600"
        cell = f"%%reason --model scripted:{script} --trace {traces} {limit}\nRun every block."
        ours_id = run_cell(kc, counter, cell, 300)
        cell_bytes = counter.saved_cell_bytes(ours_id)
        line = traces.read_bytes().splitlines()[-1]
        trace = json.loads(line)
        assert trace["finish_reason"] == "answer", trace["finish_reason"]
        assert len(trace["steps"]) == args.blocks
        text_chars = sum(len(s["text"]) for s in trace["segments"])
        updates = sum(
            -(-len(s["text"]) // (args.delta if s["kind"] == "model" else len(s["text"])))
            for s in trace["segments"]
            if s["text"]
        )
        naive_id = run_cell(kc, counter, NAIVE_CELL.format(path=str(traces), delta=args.delta), 600)
        # The same run with the JupyterLab extension attached: the call it makes on connecting.
        attach = "__import__('kernel_bridge.lab').lab.apply_settings({'live_view': %s})"
        run_cell(kc, counter, attach % True, 30)
        live_id = run_cell(kc, counter, cell, 300)
        live_cell_bytes = counter.saved_cell_bytes(live_id)
        run_cell(kc, counter, attach % False, 30)
        ours = figures(
            "%%reason, no extension (stream + display + comm + trace bundle)",
            counter.of(ours_id),
            len(line),
        )
        attached = figures(
            "%%reason, extension attached (live bundle + comm + trace bundle)",
            counter.of(live_id),
            len(line),
        )
        naive = figures(
            f"display-handle update per {args.delta}-char delta", counter.of(naive_id), len(line)
        )
        steps = step_times(kc, counter, work)
    finally:
        counter.close()
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    cold: dict[str, float] = {}
    if args.cold_model:  # the model is converted once first: the figure is a load, not that
        question = "What is 2 + 2?"
        first_visible_line(f"%%reason --model {args.cold_model} --max-steps 1\n{question}", work)
        cold["print('hello') in a fresh kernel (baseline)"] = first_visible_line(
            "print('hello')", work
        )
        cold[f"%%reason --model {args.cold_model} in a fresh kernel"] = first_visible_line(
            f"%%reason --model {args.cold_model} --max-steps 1\n{question}", work
        )

    rows = [ours, attached, naive]
    print(
        f"# %%reason streaming: one {text_chars:,}-character assistant turn "
        f"({args.blocks} blocks), trace JSON {len(line):,} bytes\n"
    )
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; bytes are every iopub frame a client received for the cell.\n"
    )
    print(
        "| renderer | iopub bytes | ÷ trace size | messages | cell time (s) | peak msgs/s "
        f"(limit {MSG_RATE_LIMIT:,}) | peak bytes/s (limit {DATA_RATE_LIMIT:,}) | over a limit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for f in rows:
        print(
            f"| {f.name} | {f.bytes:,} | {f.ratio:.2f} | {f.messages:,} | {f.seconds:.1f} | "
            f"{f.peak_msgs_per_s:,} | {f.peak_bytes_per_s:,} | {'yes' if f.over_limits else 'no'} |"
        )
    print(
        f"\nThe saved %%reason cell: {cell_bytes:,} bytes of outputs, "
        f"{cell_bytes / len(line):.2f}× the trace ({live_cell_bytes:,} bytes, "
        f"{live_cell_bytes / len(line):.2f}×, with the extension attached).\n"
    )
    received = naive.by_type.get("update_display_data", [0])[0]
    dropped = updates - received
    print(
        f"\nnaive ÷ %%reason bytes: {naive.bytes / ours.bytes:,.0f}×; the naive loop sent "
        f"{updates:,} updates and the client received {received:,}"
        + (f" ({dropped:,} dropped at ZeroMQ's high-water mark)" if dropped else "")
        + "\n"
    )
    for f in (ours, attached):
        print(f"| {f.name}: message type | messages | bytes | ÷ trace size |")
        print("|---|---:|---:|---:|")
        for kind, (count, size) in f.by_type.items():
            print(f"| {kind} | {count:,} | {size:,} | {size / len(line):.2f} |")
        print()
    print(f"\n| {STEP_BLOCKS} trivial blocks | ms per step | ÷ CLI |\n|---|---:|---:|")
    for name, seconds in steps.items():
        print(f"| {name} | {seconds * 1000:.1f} | {seconds / steps['CLI']:.2f} |")
    if cold:
        base = next(iter(cold.values()))
        print("\n| first visible line of a cell | ms | ÷ baseline |\n|---|---:|---:|")
        for name, seconds in cold.items():
            print(f"| {name} | {seconds * 1000:.1f} | {seconds / base:.1f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "text_chars": text_chars,
                    "trace_bytes": len(line),
                    "blocks": args.blocks,
                    "rows": [asdict(f) | {"ratio": f.ratio} for f in rows],
                    "step_seconds": steps,
                    "saved_cell_bytes": cell_bytes,
                    "saved_cell_bytes_extension_attached": live_cell_bytes,
                    "first_visible_line_s": cold,
                },
                indent=2,
            )
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
