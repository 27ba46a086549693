"""The kernel-bridge command, run as a user runs it: a subprocess with a real kernel."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest

from kernel_bridge.trace import Trace, load_traces

SCRIPT = Path(__file__).parent / "scripts" / "primes.txt"


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(home), "NO_COLOR": "1"}
    env.pop("KERNEL_BRIDGE_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "kernel_bridge.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_reason_streams_thinking_code_outputs_and_answer(tmp_path):
    out = cli(
        "reason",
        "Sum the primes below 50.",
        "--model",
        f"scripted:{SCRIPT}",
        "--no-color",
        home=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    order = [
        text.index(s)
        for s in (
            "Sum the primes below 50.",
            "I will find the primes",
            "print(len(primes))",
            "\n15\n",
            "sum(primes)",
            "\n328\n",
            "sum to 328",
        )
    ]
    assert order == sorted(order)
    assert "stale output" not in text
    traces = load_traces(tmp_path / "traces.jsonl")
    assert len(traces) == 1
    assert traces[0].answer == "The primes below 50 sum to **328**."
    assert f"trace {traces[0].id} saved to" in text


def test_trace_option_show_and_export(tmp_path):
    trace_file = tmp_path / "run.jsonl"
    assert (
        cli(
            "reason",
            "q",
            "--model",
            f"scripted:{SCRIPT}",
            "--trace",
            str(trace_file),
            home=tmp_path,
        ).returncode
        == 0
    )
    shown = cli("traces", "show", str(trace_file), "--no-color", home=tmp_path)
    assert shown.returncode == 0
    assert "sum(primes)" in shown.stdout and "328" in shown.stdout
    nb_path = tmp_path / "out" / "trace.ipynb"
    exported = cli("export", str(trace_file), "--to", str(nb_path), home=tmp_path)
    assert exported.returncode == 0, exported.stderr
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells if c.cell_type == "code"][1] == "sum(primes)"


# Each case is its own test, so the workers share these subprocess runs (about 2 s each).
ONE_LINE_ERRORS = [
    ("reason",),
    ("reason", "q", "--model", "no-such-model"),
    ("reason", "q", "--model", "scripted:/no/such/file.txt"),
    ("reason", "q", "--max-steps", "0", "--model", f"scripted:{SCRIPT}"),
    ("reason", "q", "--timeout", "soon"),
    ("reason", "", "--model", f"scripted:{SCRIPT}"),
    ("reason", " \n\t", "--model", f"scripted:{SCRIPT}"),
    ("reason", "q", "--model", ""),  # used to run the local model
    ("reason", "q", "--model", "  "),
    ("reason", "q", "--profile", "klingon", "--model", f"scripted:{SCRIPT}"),
    ("reason", "q", "--reasoning-effort", "extreme"),
    ("reason", "q", "--model", f"scripted:{SCRIPT}", "--reasoning-effort", "high"),
    ("traces", "show", "{tmp}/missing.jsonl"),
    ("export", "{tmp}/missing.jsonl", "--to", "{tmp}/x.ipynb"),
    ("frobnicate",),
]


@pytest.mark.parametrize("args", ONE_LINE_ERRORS, ids=" ".join)
def test_errors_are_one_line_without_traceback(tmp_path, args):
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    out = cli(*args, home=tmp_path)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, (args, out.stderr)
    assert lines[0].startswith("kernel-bridge: error: "), (args, lines)
    assert "Traceback" not in out.stderr


def test_run_that_hits_a_limit_exits_nonzero_and_saves_the_trace(tmp_path):
    out = cli("reason", "q", "--model", f"scripted:{SCRIPT}", "--max-steps", "1", home=tmp_path)
    assert out.returncode == 1
    assert "max_steps" in out.stdout
    assert load_traces(tmp_path / "traces.jsonl")[0].finish_reason == "max_steps"


def test_a_turn_that_ends_without_an_answer_says_so_and_exits_nonzero(tmp_path):
    script = tmp_path / "no_answer.txt"
    script.write_text("<think>\n```python\nimport time\ntime.sleep(60)\n```\n")
    out = cli("reason", "q", "--model", f"scripted:{script}", "--timeout", "1", home=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "no_answer · 1 block" in out.stdout
    (trace,) = load_traces(tmp_path / "traces.jsonl")
    assert (trace.finish_reason, trace.answer) == ("no_answer", None)
    assert [s.status for s in trace.steps] == ["timeout"]


def run_main(capsys, *args: str) -> tuple[int, str]:
    """The command in this process (for checks that end before anything runs)."""
    from kernel_bridge.cli import main

    status = main(list(args))
    return status, capsys.readouterr().err


def test_numeric_options_must_be_finite_and_in_range(tmp_path, capsys, monkeypatch):
    # `--timeout nan` used to pass the `<= 0` check and remove the block timeout altogether.
    monkeypatch.setenv("KERNEL_BRIDGE_HOME", str(tmp_path))
    cases = [
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "-1"),
        ("--timeout", "0"),
        ("--time-limit", "nan"),
        ("--time-limit", "1e999"),  # inf
        ("--time-limit", "0"),
        ("--max-steps", "0"),
        ("--max-steps", "1.5"),
        ("--max-tokens", "-3"),
    ]
    for option, value in cases:
        status, err = run_main(
            capsys, "reason", "q", "--model", f"scripted:{SCRIPT}", option, value
        )
        assert status == 2, (option, value, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (option, value, err)
        assert lines[0].startswith(f"kernel-bridge: error: argument {option}: expected a"), lines
        assert repr(value) in lines[0]
    assert not (tmp_path / "traces.jsonl").exists()


def test_show_and_export_skip_a_corrupt_line_and_name_it(tmp_path):
    trace_file = tmp_path / "run.jsonl"
    for question in ("first", "second"):
        run = cli(
            "reason",
            question,
            "--model",
            f"scripted:{SCRIPT}",
            "--trace",
            str(trace_file),
            home=tmp_path,
        )
        assert run.returncode == 0, run.stderr
    lines = trace_file.read_text().splitlines(keepends=True)
    trace_file.write_text(lines[0] + '{"format_version": 1, "id": "half\n' + lines[1])
    shown = cli("traces", "show", str(trace_file), "--no-color", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (warning,) = shown.stderr.splitlines()
    assert warning.startswith(
        f"kernel-bridge: warning: {trace_file}, line 2: skipped, not valid JSON ("
    )
    assert "first" in shown.stdout and "second" in shown.stdout
    nb_path = tmp_path / "second.ipynb"
    exported = cli("export", str(trace_file), "--to", str(nb_path), home=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "line 2: skipped" in exported.stderr
    assert "**Question:** second" in nbformat.read(nb_path, as_version=4).cells[0].source


def test_control_characters_from_the_model_and_its_code_never_reach_the_terminal(tmp_path):
    title, clear, clipboard = "\x1b]0;pwned\x07", "\x1b[2J", "\x1b]52;c;aGk=\x07"
    script = tmp_path / "hostile.txt"
    script.write_text(
        f"<think>\nSet the title{title} and tab\there.\n```python\n"
        f"print({clipboard!r} + 'copied\\x9b')\n```\nDone{clear}.\n</think>\n"
        f"<answer>Answer{clear} with\ttab</answer>\n"
    )
    trace_file = tmp_path / "run.jsonl"
    live = cli(
        "reason",
        f"Question{title}",
        "--model",
        f"scripted:{script}",
        "--trace",
        str(trace_file),
        home=tmp_path,
    )
    assert live.returncode == 0, live.stderr
    shown = cli("traces", "show", str(trace_file), "--no-color", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for out in (live.stdout, shown.stdout):
        assert not set(out) & {"\x1b", "\x07", "\x9b"}, repr(out)
        assert "Question\\x1b]0;pwned\\x07" in out
        assert "copied\\x9b" in out and "\\x1b]52;c;aGk=" in out
        assert "Answer\\x1b[2J" in out
        assert "with\\x09tab" not in out  # tabs and newlines are kept as they are
    assert "Set the title\\x1b]0;pwned\\x07 and tab" in live.stdout
    # the trace keeps exactly what happened; only the terminal view escapes it
    assert load_traces(trace_file)[0].steps[0].output_text == clipboard + "copied\x9b"


class Unauthorized(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that refuses every key, with a message on two lines."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = "Incorrect API key provided: sk-x.\nFind your API key at example.invalid."
        body = json.dumps({"error": {"message": message, "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_api_error_is_one_line_on_stderr(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    try:
        out = cli("reason", "q", "--model", "openai/gpt-4o", home=tmp_path)
    finally:
        server.shutdown()
    assert out.returncode == 1
    (line,) = out.stderr.splitlines()
    assert line.startswith("kernel-bridge: error: SamplerError: openai/gpt-4o: authentication")
    assert "sk-x. Find your API key" in line
    assert "Incorrect API key" not in out.stdout
    assert load_traces(tmp_path / "traces.jsonl")[0].finish_reason == "error"


# The model's code walks up from its kernel through every ancestor, reading each one's environment.
READ_ANCESTORS = """<think>
```python
import os
pid = os.getppid()
while pid:
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
        print(pid, "read", [v.decode() for v in env if v.startswith(b"OPENAI_API_KEY=")])
    except PermissionError:
        print(pid, "denied")
    status = open(f"/proc/{pid}/status").read()
    pid = int(status.split("PPid:")[1].split()[0])
```
</think>
<answer>done</answer>
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_the_kernel_cannot_read_an_api_key_from_the_cli_environment(request):
    """An ordinary user's kernel cannot read ``/proc/<CLI pid>/environ``: the CLI is non-dumpable,
    so a key given to the command alone stays out of the kernel's reach."""
    work = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))  # short: room for kernel sockets
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    work.chmod(0o777)  # everything the CLI writes, as uid 65534
    script = work / "read_ancestors.txt"
    script.write_text(READ_ANCESTORS)
    trace_file = work / "run.jsonl"
    marker = f"sk-test-marker-{secrets.token_hex(8)}"
    env = {**os.environ, "OPENAI_API_KEY": marker, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("KERNEL_BRIDGE_MODEL", None)
    env.update({name: str(work) for name in ("HOME", "KERNEL_BRIDGE_HOME", "TMPDIR")})
    env["JUPYTER_RUNTIME_DIR"] = str(work / "runtime")
    # uid 65534 with CAP_DAC_READ_SEARCH: it reads files root closed to others (this Python may
    # live under /root), but the check that guards /proc/<pid>/environ needs CAP_SYS_PTRACE.
    as_nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    as_nobody += ["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
    tried = subprocess.run([*as_nobody, sys.executable, "-c", "import kernel_bridge"], env=env)
    if tried.returncode != 0:  # e.g. a container that withholds that capability
        pytest.skip("this machine cannot run the CLI as uid 65534 (setpriv failed)")
    proc = subprocess.Popen(
        [*as_nobody, sys.executable, "-m", "kernel_bridge.cli", "reason", "q",
         "--model", f"scripted:{script}", "--trace", str(trace_file)],
        env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)  # setpriv execs the CLI: proc.pid is the CLI's
    assert proc.returncode == 0, err
    (trace,) = load_traces(trace_file)
    walked = trace.steps[0].output_text
    assert marker not in out + err + trace_file.read_text(), walked
    assert f"{proc.pid} denied" in walked.splitlines(), walked  # it reached the CLI


def test_a_trace_path_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file")
    cases = [
        (tmp_path, "it is a directory; name a file in it"),  # used to fail only at the end
        (tmp_path / "notes.txt" / "run.jsonl", "notes.txt is a file, not a directory"),
        (Path("/sys/kernel-bridge-traces.jsonl"), "Permission denied"),  # read-only for root too
    ]
    for path, reason in cases:
        status, err = run_main(
            capsys, "reason", "q", "--model", f"scripted:{SCRIPT}", "--trace", str(path)
        )
        assert status == 2, (path, err)
        (line,) = err.splitlines()
        assert line.startswith(f"kernel-bridge: error: cannot write traces to {path}: "), line
        assert reason in line
    assert capsys.readouterr().out == ""  # nothing ran


def test_a_trace_store_that_fails_mid_run_goes_to_a_fallback_file(tmp_path):
    # The model's own code removes the trace directory, as a full disk would fail the writes.
    store = tmp_path / "store"
    script = tmp_path / "breaks_the_store.txt"
    script.write_text(
        "<think>\n```python\nimport pathlib, shutil\n"
        f"shutil.rmtree({str(store)!r})\npathlib.Path({str(store)!r}).write_text('in the way')\n"
        "print('store gone')\n```\nStill going.\n</think>\n<answer>done</answer>\n"
    )
    store.mkdir()
    out = cli(
        "reason",
        "q",
        "--model",
        f"scripted:{script}",
        "--trace",
        str(store / "run.jsonl"),
        home=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert "store gone" in out.stdout and "done" in out.stdout  # the run went on to its answer
    (line,) = out.stderr.splitlines()
    prefix = f"kernel-bridge: error: cannot write the trace to {store / 'run.jsonl'}: "
    assert line.startswith(prefix), line
    fallback = Path(line.rsplit("; saved it to ", 1)[1].removesuffix(" instead"))
    try:
        (trace,) = load_traces(fallback)
        assert trace.finish_reason == "answer" and trace.answer == "done"
        assert trace.steps[0].output_text == "store gone"
        assert fallback.name in out.stdout  # the closing note names it too
    finally:
        fallback.unlink()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_sigterm_and_sighup_end_the_run_with_the_trace_saved(tmp_path, signum):
    # SIGINT is what Ctrl-C sends; the kernel, in a session of its own, does not get it.
    sleeping = tmp_path / "sleeping"
    script = tmp_path / "slow.txt"
    script.write_text(
        "<think>\n```python\nprint('first')\n```\n"
        "```python\nimport pathlib, time\nprint('second', flush=True)\n"
        f"pathlib.Path({str(sleeping)!r}).touch()\ntime.sleep(60)\n```\n"
        "</think>\n<answer>never</answer>\n"
    )
    trace_file = tmp_path / "run.jsonl"
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "kernel_bridge.cli", "reason", "q"),
            *("--model", f"scripted:{script}", "--trace", str(trace_file)),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "run.jsonl.inprogress"
    deadline = time.monotonic() + 60
    while not sleeping.exists():  # the second block printed and sleeps
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)  # for its output to reach the CLI
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err  # 130 for Ctrl-C, as a shell reports it
    (line,) = trace_file.read_text().splitlines()  # a line of its own, not only a checkpoint
    trace = Trace.from_json(line)
    assert trace.finish_reason == "interrupted"
    assert trace.steps[0].output_text == "first"
    assert trace.steps[1].output_text.startswith("second\n[interrupted")  # the stopped block
    assert trace.answer is None
    assert "⟵ error in" in out  # the terminal shows the stopped block end, as the trace does
    assert not list(checkpoints.glob("*.json"))
    assert "interrupted; trace saved to" in out
    leftovers = glob.glob(os.path.join(tempfile.gettempdir(), f"kernel-bridge-{proc.pid}-*"))
    assert not leftovers  # the kernel's connection file and workspace are removed


def test_setup_ipython_loads_reason_in_every_kernel_and_remove_undoes_it(tmp_path):
    ipython_dir = tmp_path / "ipython"
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir), "KERNEL_BRIDGE_HOME": str(tmp_path)}

    def kernel_knows_reason() -> bool:
        from jupyter_client.manager import start_new_kernel

        km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
        try:
            reply = kc.execute_interactive(
                "",
                user_expressions={"r": "'reason' in get_ipython().magics_manager.magics['cell']"},
                timeout=60,
            )
            return reply["content"]["user_expressions"]["r"]["data"]["text/plain"] == "True"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    def setup(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kernel_bridge.cli", "setup-ipython", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = setup()
    assert out.returncode == 0, out.stderr
    startup = ipython_dir / "profile_default" / "startup" / "50-kernel-bridge.py"
    assert startup.exists() and str(startup) in out.stdout
    assert kernel_knows_reason()  # a fresh kernel, as after a restart: no %load_ext
    assert setup("--remove").returncode == 0
    assert not startup.exists()
    assert not kernel_knows_reason()


def test_train_prints_no_library_warnings(tmp_path):
    """transformers warns (FutureWarning, is_gradient_checkpointing) when LoRA wraps a model: the
    terminal of `kernel-bridge train` shows the run's own lines only (issue 15, item 4)."""
    tasks = tmp_path / "tasks.jsonl"
    rows = ({"question": f"What is {i} + {i}?", "answer": 2 * i} for i in range(4))
    tasks.write_text("\n".join(map(json.dumps, rows)))
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "tiny"\nlora = true\nlora_rank = 4\ntasks = "{tasks}"\ngroup_size = 2\n'
        'prompts_per_step = 1\nmax_tokens = 8\nsystem_prompt = "none"\nsteps = 1\n'
        f'pool_size = 1\nprogress = false\nout_dir = "{tmp_path / "out"}"\n'
    )
    done = cli("train", str(config), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "step 1:" in done.stdout
    assert "Warning" not in done.stderr and "warnings.warn" not in done.stderr, done.stderr
