"""What keeps the model's code in its kernel: the allow-list environment, connection files that
leave the disk, the process limit, and the sandbox (bubblewrap), each tried by breaking it.

The sandboxed tests need ``bwrap`` (CI installs it) and are skipped only where it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from kernel_bridge import Kernel, KernelPool
from kernel_bridge.execution import cgroup, scrub_environment
from kernel_bridge.execution.cgroup import CgroupUnavailableError, PidsCgroup
from kernel_bridge.execution.sandbox import (
    SandboxUnavailableError,
    default_read_only_paths,
    python_paths,
)

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap",
)

SECRETS = {
    "OPENAI_API_KEY": "sk-parent-secret-1",
    "DATABASE_URL": "postgres://app:hunter2@db/app",
    "MYSQL_PWD": "hunter2",
    "GH_PAT": "ghp_parentsecret",
    "SENTRY_DSN": "https://key@sentry.example/1",
    "PROXY_AUTH": "Basic dXNlcjpwYXNz",
}


def _pids_cgroup_problem() -> str | None:
    try:
        PidsCgroup.create(8).remove()
    except CgroupUnavailableError as e:
        return str(e)
    return None


# A fork flood that counts what it got: children sleep until killed, the parent reports.
FORK_FLOOD = """
import os, time
children, error = [], None
for _ in range(400):
    try:
        pid = os.fork()
    except OSError as e:
        error = type(e).__name__
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(len(children), error)
"""


# -- the environment (every local kernel) ------------------------------------------------------


def test_kernel_environment_is_an_allow_list():
    parent = {
        **SECRETS,
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "KERNEL_BRIDGE_OFFLINE": "1",
        "HTTPS_PROXY": "http://user:pass@proxy:3128",
        "NO_PROXY": "localhost",
        "SOME_SETTING": "x",
        "MY_SERVICE_HOST": "db",
    }
    env = scrub_environment(parent, allow=["MY_*", "GH_PAT"], extra={"EXTRA": "1"})
    assert env == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "KERNEL_BRIDGE_OFFLINE": "1",
        "NO_PROXY": "localhost",
        "MY_SERVICE_HOST": "db",
        "GH_PAT": "ghp_parentsecret",
        "EXTRA": "1",
    }


async def test_secrets_the_name_filter_passed_do_not_reach_the_kernel(monkeypatch):
    # Before the allow-list, DATABASE_URL, MYSQL_PWD, GH_PAT, SENTRY_DSN and *_AUTH got through.
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MY_SETTING", "wanted")
    async with Kernel(allow_env=["MY_*"]) as k:
        result = await k.execute(
            f"import os\nsorted(n for n in os.environ if n in {sorted([*SECRETS, 'MY_SETTING'])})"
        )
    assert result.output_text == "['MY_SETTING']"


# -- connection files (every local kernel) ----------------------------------------------------


async def test_connection_file_leaves_the_disk_once_the_kernel_started():
    async with Kernel() as k:
        connection_file = Path(k._transport.km.connection_file)
        assert not connection_file.exists()
        # Its own directory (the workspace's parent) holds no connection file either.
        found = await k.execute("import glob\nglob.glob('../**/*.json', recursive=True)")
        assert found.output_text == "[]"
        await k.restart()
        assert not connection_file.exists(), "written again for the restart, then removed"
        assert (await k.execute("1 + 1")).output_text == "2"


# -- the process limit (every local kernel) ---------------------------------------------------


async def test_fork_flood_is_bounded_for_root_too():
    # 796 processes in 10 s before; process_limit (RLIMIT_NPROC) did nothing for root.
    if os.geteuid() == 0 and (problem := _pids_cgroup_problem()):
        pytest.skip(f"running as root without a pids cgroup, nothing bounds it: {problem}")
    async with Kernel(process_limit=48, timeout=60) as k:
        result = await k.execute(FORK_FLOOD)
        forked, error = result.output_text.split()
        assert error == "BlockingIOError"
        assert int(forked) < 48
        assert (await k.execute("'alive'")).output_text == "'alive'"


async def test_every_kernel_gets_a_pids_cgroup_of_1024_where_there_is_one():
    if problem := _pids_cgroup_problem():
        pytest.skip(problem)
    async with Kernel() as k:
        group = k._transport.cgroup
        assert (group.path / "pids.max").read_text().strip() == "1024"
        assert k.pid in group.pids()
    assert not group.path.exists()


async def test_without_a_pids_cgroup_the_limit_says_how_it_holds(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroup, "CGROUP_ROOT", tmp_path)  # a system without cgroups
    async with Kernel(process_limit=100) as k:
        bound = k._transport.process_bound
        assert (await k.execute("1")).status == "ok"
    if os.geteuid() == 0:
        assert bound.startswith("none: running as root, and no writable pids cgroup")
    else:
        assert bound.startswith("RLIMIT_NPROC")


async def test_processes_left_in_the_cgroup_are_killed_at_restart():
    if problem := _pids_cgroup_problem():
        pytest.skip(problem)
    async with Kernel() as k:
        daemon = await k.execute(
            "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True).pid"
        )
        await k.restart()
        pid = int(daemon.output_text)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert k._transport.cgroup.pids() == [k.pid]


def test_a_dead_owners_cgroup_is_emptied_by_the_next_one_made(request):
    # Before, a process left in a cgroup whose owner was SIGKILLed ran on, the cgroup with it.
    if problem := _pids_cgroup_problem():
        pytest.skip(problem)
    namespace = cgroup._pid_namespace()
    if namespace is None:
        pytest.skip("/proc does not show this process's pid namespace")
    reaped = subprocess.Popen(["true"])
    reaped.wait()  # a pid of our namespace that no process has now
    assert not Path(f"/proc/{reaped.pid}").exists()
    parent = cgroup._pids_parent(cgroup.CGROUP_ROOT)
    names = {
        "ours": f"{reaped.pid}-{namespace}-0dead0ff",
        "another namespace": f"{reaped.pid}-{namespace + 1}-0dead0ff",
        "no namespace": f"{reaped.pid}-0dead0ff",
    }
    left: dict[str, subprocess.Popen[bytes]] = {}
    for which, name in names.items():
        (parent / name).mkdir()
        request.addfinalizer(PidsCgroup(parent / name).remove)
        left[which] = subprocess.Popen(["sleep", "300"], start_new_session=True)
        request.addfinalizer(left[which].kill)
        (parent / name / "cgroup.procs").write_text(str(left[which].pid))

    request.addfinalizer(PidsCgroup.create(8).remove)

    assert left["ours"].wait(timeout=10) == -9  # its owner is dead for certain
    assert not (parent / names["ours"]).exists()
    # Another namespace's owner may still run: a minute old and empty at least, as before.
    for which in ("another namespace", "no namespace"):
        assert left[which].poll() is None
        assert PidsCgroup(parent / names[which]).pids() == [left[which].pid]


def test_a_cgroup_the_launcher_cannot_join_is_a_warning_not_a_failure():
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "kernel_bridge._launcher", "--cgroup", "/nonexistent", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "kernel-bridge: cannot join /nonexistent" in done.stderr


# -- the sandbox ------------------------------------------------------------------------------


async def test_sandbox_without_bubblewrap_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    before = set(Path(tempfile.gettempdir()).glob(f"kernel-bridge-{os.getpid()}-*"))
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        await Kernel(sandbox=True).start()
    assert set(Path(tempfile.gettempdir()).glob(f"kernel-bridge-{os.getpid()}-*")) == before


@pytest.fixture
async def sandboxed():
    async with Kernel(sandbox=True, timeout=30) as k:
        yield k


@contextlib.contextmanager
def _listening():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


CONNECT = """
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


@needs_bwrap
async def test_sandbox_has_no_network(sandboxed):
    with _listening() as port:
        result = await sandboxed.execute(CONNECT.format(port=port))
    assert result.output_text == "ConnectionRefusedError"  # its own loopback, nothing there
    outside = await sandboxed.execute(
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=3)\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
        "[name for _, name in socket.if_nameindex()]"
    )
    assert outside.output_text.splitlines() == ["101", "['lo']"]  # ENETUNREACH


@needs_bwrap
async def test_sandbox_network_can_be_allowed():
    with _listening() as port:
        async with Kernel(sandbox=True, sandbox_network=True) as k:
            result = await k.execute(CONNECT.format(port=port))
    assert result.output_text == "connected"


@needs_bwrap
async def test_sandbox_writes_only_its_workspace_and_private_tmp(sandboxed, tmp_path):
    marker = tmp_path / "host-file"
    marker.write_text("host")
    targets = ["/usr/x", "/etc/x", f"{sys.prefix}/x", "/x", str(tmp_path / "x"), str(marker)]
    result = await sandboxed.execute(
        "import os\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print(e.strerror)\n"
        "open('/tmp/private', 'w').write('p')\n"
        "_ = open('made-here.txt', 'w').write('w')"
    )
    assert set(result.output_text.splitlines()) <= {
        "Read-only file system",
        "No such file or directory",
    }
    assert marker.read_text() == "host"
    assert not Path(tempfile.gettempdir(), "private").exists()
    assert (sandboxed.workspace_path / "made-here.txt").read_text() == "w"
    assert result.new_files == ["made-here.txt"]


def _first_parts_under(root: Path, paths: list[str]) -> set[str]:
    return {Path(p).relative_to(root).parts[0] for p in paths if Path(p).is_relative_to(root)}


@needs_bwrap
async def test_sandbox_shows_no_home_no_host_tmp_and_no_system_secrets(sandboxed):
    home, tmp = Path.home(), Path("/tmp")
    shown = [*python_paths(), *default_read_only_paths()]  # what the sandbox binds on purpose
    result = await sandboxed.execute(
        "import os\n"
        f"print(sorted(os.listdir({str(home)!r})) if os.path.isdir({str(home)!r}) else [])\n"
        "print(sorted(os.listdir('/tmp')))\n"
        "try:\n"
        "    print(repr(open('/etc/shadow').read()))\n"
        "except OSError as e:\n"
        "    print(e.strerror)\n"
        "print(os.path.exists('/run'), os.path.exists('/sys/class'))"
    )
    seen_home, seen_tmp, shadow, run_sys = result.output_text.splitlines()
    assert set(eval(seen_home)) <= _first_parts_under(home, shown)  # not ~/.ssh, ~/.config, ...
    assert set(eval(seen_tmp)) == {
        ".ipython",
        sandboxed.workspace_path.parent.name,  # the mount point of its own directories
        *_first_parts_under(tmp, shown),
    }
    assert shadow in ("''", "Permission denied")
    assert run_sys == "False False"


@needs_bwrap
async def test_sandbox_sees_no_other_process(sandboxed):
    result = await sandboxed.execute(
        "import os\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getpid(), "
        "os.getppid())\n"
        "try:\n"
        f"    os.kill({os.getpid()}, 0)\n"
        "except ProcessLookupError:\n"
        "    print('no such process')"
    )
    first, second = result.output_text.splitlines()
    assert first == "[1, 2] 2 1"  # bubblewrap's init and the kernel
    assert second == "no such process"


@needs_bwrap
async def test_sandbox_cannot_read_the_parent_environment(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    async with Kernel(sandbox=True) as k:
        result = await k.execute(
            "import os\n"
            "seen = [open(f'/proc/{p}/environ').read() for p in os.listdir('/proc') "
            "if p.isdigit()] + [repr(dict(os.environ))]\n"
            f"[s for s in {list(SECRETS.values())!r} if any(s in text for text in seen)]"
        )
    assert result.output_text == "[]"


@needs_bwrap
async def test_sandbox_holds_no_capability_and_cannot_change_the_system(sandboxed):
    result = await sandboxed.execute(
        "import os, subprocess\n"
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')]\n"
        "print(caps[0])\n"
        "for path in ['/proc/sys/kernel/core_pattern', '/proc/sys/vm/drop_caches']:\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_WRONLY))\n"
        "        print('opened', path)\n"
        "    except OSError as e:\n"
        "        print(e.strerror)\n"
        "print(subprocess.run(['mount', '-o', 'remount,rw', '/usr'], capture_output=True)"
        ".returncode != 0)"
    )
    assert result.output_text.splitlines() == [
        "0000000000000000",
        "Read-only file system",
        "Read-only file system",
        "True",
    ]


@needs_bwrap
async def test_sandboxed_pool_kernels_cannot_reach_each_other():
    # A rollout set a variable in a sibling kernel through its connection file. Here it gets
    # even the sibling's key and socket paths, and still cannot connect.
    async with (
        KernelPool(size=2, sandbox=True) as pool,
        pool.acquire() as a,
        pool.acquire() as b,
    ):
        await b.execute("mine = 'untouched'")
        info = b._transport.km.get_connection_info(session=False)
        info = {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}
        attack = await a.execute(
            "import json, os\n"
            "from jupyter_client import BlockingKernelClient\n"
            f"info = json.loads({json.dumps(info)!r})\n"
            "print(os.path.exists(os.path.dirname(info['ip'])))\n"
            "c = BlockingKernelClient()\n"
            "c.load_connection_info(info)\n"
            "c.start_channels()\n"
            "try:\n"
            "    c.execute_interactive(\"mine = 'tampered'\", timeout=3)\n"
            "    print('reached')\n"
            "except Exception as e:\n"
            "    print(type(e).__name__)\n"
            "c.stop_channels()",
            timeout=20,
        )
        assert attack.output_text.splitlines() == ["False", "TimeoutError"]
        assert (await b.execute("mine")).output_text == "'untouched'"


@needs_bwrap
async def test_sandbox_fork_flood_is_bounded():
    if problem := _pids_cgroup_problem():
        pytest.skip(f"no pids cgroup here, the flood ends only with the kernel: {problem}")
    async with Kernel(sandbox=True, process_limit=48, timeout=60) as k:
        result = await k.execute(FORK_FLOOD)
        forked, error = result.output_text.split()
        assert (int(forked) < 48, error) == (True, "BlockingIOError")
        assert (await k.execute("'alive'")).output_text == "'alive'"


@needs_bwrap
async def test_sandbox_processes_end_with_it_even_without_a_cgroup():
    # Its pid namespace: when bubblewrap goes (here killed, as by a crash of the host process),
    # every process in the sandbox goes too, also those that left the kernel's session.
    async with Kernel(sandbox=True, process_limit=None) as k:
        bwrap = psutil.Process(k.pid)
        await k.execute(
            "import subprocess\n"
            "subprocess.Popen(['sh', '-c', 'sleep 300 & sleep 300'], start_new_session=True)"
        )
        await asyncio.sleep(0.5)
        sleepers = [p for p in bwrap.children(recursive=True) if p.name() == "sleep"]
        assert len(sleepers) == 2
        bwrap.kill()
        _gone, alive = psutil.wait_procs(sleepers, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@needs_bwrap
async def test_sandboxed_kernel_interrupts_and_restarts():
    async with Kernel(sandbox=True, timeout=2, interrupt_grace=5) as k:
        await k.execute("x = 41")
        timed_out = await k.execute("import time\ntime.sleep(30)")
        assert (timed_out.status, timed_out.restarted) == ("timeout", False)
        assert (await k.execute("x + 1")).output_text == "42"
        died = await k.execute("import os\nos._exit(1)")
        assert (died.status, died.restarted) == ("died", True)
        assert (await k.execute("'back'")).output_text == "'back'"


@needs_bwrap
async def test_finance_tools_keep_their_cutoff_in_the_sandbox(monkeypatch, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("vega_datasets")
    from kernel_bridge.tools import toolset

    # A daily series the host side fetched earlier, in the cache the sandbox sees read-only.
    monkeypatch.setenv("KERNEL_BRIDGE_CACHE", str(tmp_path))
    days = pd.date_range("2005-01-03", "2005-12-30", freq="B", tz="America/New_York")
    frame = pd.DataFrame({"Close": range(len(days))}, index=days.rename("Date"))
    folder = tmp_path / "market" / "history" / "ZZZZ" / "1d"
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "2005-01-01_2005-12-31.parquet")
    async with Kernel(sandbox=True, timeout=60) as k:
        await k.add_setup(toolset("finance", cutoff="2005-06-30"))
        cached = await k.execute(
            "p = stock_price('ZZZZ', '2005-01-01', '2005-12-31')\nprint(p.index.max().date())"
        )
        sample = await k.execute(  # the offline sample data, from the installed package
            "s = stock_price('MSFT', '2005-01-01', '2006-12-31', interval='1mo')\n"
            "print(s.index.max().date())"
        )
    assert "from cache" in cached.output_text, cached.output_text
    assert cached.output_text.endswith("2005-06-30")
    assert "sample data" in sample.output_text, sample.output_text
    assert sample.output_text.endswith("2005-06-01")  # June's bar is over by the cutoff


# -- training rollouts ------------------------------------------------------------------------


def test_rollouts_are_sandboxed_wherever_bubblewrap_works():
    from kernel_bridge.execution.sandbox import sandbox_problem
    from kernel_bridge.training.rollout import RolloutSettings

    assert RolloutSettings().kernel_options() == {"sandbox": sandbox_problem() is None}
    assert RolloutSettings(sandbox=False).kernel_options() == {"sandbox": False}


@needs_bwrap
async def test_a_rollout_runs_its_blocks_in_the_sandbox():
    from kernel_bridge.samplers.scripted import ScriptedSampler
    from kernel_bridge.training.rollout import RolloutSettings, rollout

    settings = RolloutSettings(sandbox=True)
    script = "<think>\n```python\nimport os\nprint(os.getpid(), os.getppid())\n```\n</think>\n"
    async with KernelPool(1, **settings.kernel_options()) as pool:
        trace = await rollout(
            ScriptedSampler(script + "<answer>2</answer>"), pool, None, settings, "?"
        )
    assert [step.output_text for step in trace.steps] == ["2 1"]


# -- the front ends' --sandbox ---------------------------------------------------------------------

SANDBOX_SCRIPT = Path(__file__).parent / "scripts" / "sandbox_hostname.txt"


@needs_bwrap
def test_cli_sandbox_runs_the_models_code_in_the_sandbox(tmp_path):
    import subprocess
    import sys

    from kernel_bridge.trace import load_traces

    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path), "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "kernel_bridge.cli", "reason", "Where?", "--sandbox",
         "--model", f"scripted:{SANDBOX_SCRIPT}"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (trace,) = load_traces(tmp_path / "traces.jsonl")
    assert trace.steps[0].output_text == "sandbox False"  # its own hostname, no home directory


def test_cli_sandbox_without_bubblewrap_is_one_line(tmp_path):
    import subprocess
    import sys

    # A PATH without bwrap on it: the check runs before the model loads or a kernel starts.
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path), "PATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "kernel_bridge.cli", "reason", "Where?", "--sandbox",
         "--model", f"scripted:{SANDBOX_SCRIPT}"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("kernel-bridge: error: --sandbox: ") and "bubblewrap" in out.stderr
    assert out.stderr.count("\n") == 1


async def test_a_remote_kernel_cannot_be_sandboxed_from_here():
    from kernel_bridge.execution import Kernel, KernelError

    kernel = Kernel(url="http://127.0.0.1:9", sandbox=True)
    with pytest.raises(KernelError, match="sandbox=True applies to a local kernel"):
        await kernel.start()
