"""The teaching notebooks, run top to bottom in a real kernel with nbclient, as a reader runs them.

Every ``notebooks/*.ipynb`` runs in a fresh kernel, in a temporary copy of the folder, with

- ``KERNEL_BRIDGE_NOTEBOOK_MODEL=scripted:notebooks/scripts/<name>.txt`` when that script exists:
  a recorded model whose code blocks run in the real kernel (the script holds no outputs; every
  output checked here comes from the kernel), one turn per ``%%reason`` question;
- ``KERNEL_BRIDGE_OFFLINE=1`` (the finance tools answer from the vega-datasets sample data), and a
  temporary ``KERNEL_BRIDGE_HOME`` (traces) and ``KERNEL_BRIDGE_CACHE``.

In this deterministic mode no cell may fail, and each notebook's key outputs are checked against
values computed here independently. With ``KERNEL_BRIDGE_NOTEBOOK_MODEL`` set in the environment
(``KERNEL_BRIDGE_NOTEBOOK_MODEL=local pytest tests/test_notebooks.py``), the notebooks run with that
model instead and only their structure is checked: every cell ran, every ``%%reason`` cell ended
with a saved trace, and only cells tagged ``raises-exception`` (those that use the model's
variables) may fail, as they may for a reader whose model named things differently.

The committed notebooks must carry no outputs, no execution counts and nothing like a secret.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import itertools
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kernel_bridge.bundle import unpack_trace
from kernel_bridge.magic import TRACE_MIME
from kernel_bridge.trace import Trace, load_traces

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SCRIPTS = NOTEBOOKS / "scripts"
# ``reason-<id>.ipynb`` files are what ``%%reason --cells`` writes when a reader runs a notebook.
NOTEBOOK_PATHS = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("reason-"))
REAL_MODEL = os.environ.get("KERNEL_BRIDGE_NOTEBOOK_MODEL", "").strip()
CELL_TIMEOUT = 900  # the training notebook's smoke run takes about 6 minutes on 2 cores

pytestmark = pytest.mark.slow

scripted_only = pytest.mark.skipif(
    bool(REAL_MODEL), reason="checks the recorded session's outputs; a real model writes its own"
)


@dataclass
class Run:
    """A notebook after it ran: its cells with outputs, its folder, and the traces it saved."""

    nb: nbformat.NotebookNode
    folder: Path
    traces: list[Trace]

    def cell(self, start: str) -> nbformat.NotebookNode:
        """The one code cell whose source starts with ``start`` (or is exactly ``start``)."""
        found = [c for c in self.nb.cells if c.cell_type == "code" and c.source.startswith(start)]
        if len(found) > 1:
            found = [c for c in found if c.source == start]
        assert len(found) == 1, f"{len(found)} cells start with {start!r}"
        return found[0]

    def reason_cells(self) -> list[nbformat.NotebookNode]:
        return [
            c for c in self.nb.cells if c.cell_type == "code" and c.source.startswith("%%reason")
        ]

    def trace_for(self, cell: nbformat.NotebookNode) -> Trace:
        """The saved trace of a ``%%reason`` cell (the bundle that ends the cell names it)."""
        bundles = [o for o in cell.outputs if TRACE_MIME in o.get("data", {})]
        assert len(bundles) == 1, f"no trace bundle in the outputs of {cell.source[:60]!r}"
        trace_id = bundles[0].data[TRACE_MIME]["id"]
        saved = [t for t in self.traces if t.id == trace_id]
        assert saved, f"trace {trace_id} was shown but not saved"
        return saved[0]


def run_notebook(path: Path, folder: Path) -> Run:
    """Run a copy of ``path`` in ``folder`` with a fresh kernel."""
    folder.mkdir(parents=True)
    home = folder.parent / f"{path.stem}-home"
    nb = nbformat.read(path, as_version=4)
    env = {
        **os.environ,
        "KERNEL_BRIDGE_HOME": str(home),
        "KERNEL_BRIDGE_CONFIG": str(home / "no-config.toml"),
        "KERNEL_BRIDGE_OFFLINE": "1",
    }
    env.pop("KERNEL_BRIDGE_MODEL", None)
    if REAL_MODEL:
        env["KERNEL_BRIDGE_NOTEBOOK_MODEL"] = REAL_MODEL  # and the model cache stays the user's
    else:
        env["KERNEL_BRIDGE_CACHE"] = str(home / "cache")
        script = SCRIPTS / f"{path.stem}.txt"
        if script.is_file():
            env["KERNEL_BRIDGE_NOTEBOOK_MODEL"] = f"scripted:{script}"
        else:
            env.pop("KERNEL_BRIDGE_NOTEBOOK_MODEL", None)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        allow_errors=bool(REAL_MODEL),
        resources={"metadata": {"path": str(folder)}},
    )
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, str(folder / path.name))  # the outputs, to look at after a failure
    store = home / "traces.jsonl"
    return Run(nb, folder, load_traces(store) if store.exists() else [])


@pytest.fixture(scope="module")
def notebook_runs(tmp_path_factory):
    """Each notebook runs once per module, on first use, however many tests read it."""
    root = tmp_path_factory.mktemp("notebooks")
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in runs:
            path = NOTEBOOKS / f"{name}.ipynb"
            if not path.exists():
                pytest.skip(f"{path} does not exist yet")
            runs[name] = run_notebook(path, root / name)
        return runs[name]

    return get


# -- helpers ----------------------------------------------------------------------------------


def text_of(cell: nbformat.NotebookNode) -> str:
    """Everything a cell printed or showed as text, in order."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}\n")
        else:
            parts.append(out.get("data", {}).get("text/plain", "") + "\n")
    return "".join(parts)


def images(cell: nbformat.NotebookNode) -> list[str]:
    """The PNG images a cell shows: its own outputs', and those a ``%%reason`` run's one view
    shows in its HTML."""
    found = [o.data["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
    for o in cell.outputs:
        html = o.get("data", {}).get("text/html", "")
        if 'class="kb-run"' in html:
            found += re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    return found


def answer_of(cell: nbformat.NotebookNode) -> str:
    """The answer the cell showed: its run's answer, also in the run's HTML."""
    from html import escape

    (view,) = [o for o in cell.outputs if TRACE_MIME in o.get("data", {})]
    (page,) = [
        o for o in cell.outputs if 'class="kb-run"' in o.get("data", {}).get("text/html", "")
    ]
    answer = unpack_trace(view.data[TRACE_MIME]).answer
    assert answer and escape(answer) in page.data["text/html"]
    return answer


def numbers_in(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"-?\d[\d,]*\.?\d*", text)]


def defines(name: str, step) -> bool:
    """Whether a block assigns ``name`` at its top level."""
    return bool(re.search(rf"^{name}\s*=", step.code, re.MULTILINE))


@functools.cache
def primes_below(n: int) -> list[int]:
    """Trial division: another method than the sieve the recorded model uses."""
    found: list[int] = []
    for k in range(2, n):
        if all(k % p for p in found if p * p <= k):
            found.append(k)
    return found


# -- every notebook ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_runs_top_to_bottom(path, notebook_runs):
    run = notebook_runs(path.stem)
    code = [c for c in run.nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    # Only cells that use the model's variables may fail (tagged so, for a real model's choices).
    for cell in code:
        may_fail = REAL_MODEL and "raises-exception" in cell.metadata.get("tags", [])
        if not may_fail:
            assert not [o for o in cell.outputs if o.output_type == "error"], text_of(cell)
    for cell in run.reason_cells():
        trace = run.trace_for(cell)  # each run ended with its trace shown and saved
        if not REAL_MODEL:
            assert trace.finish_reason == "answer", cell.source


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a committed cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a committed execution count"
    assert "widgets" not in nb.metadata, f"{path.name}: widget state is saved"
    assert_no_secrets(path)


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_committed_notebook_opens_unmodified(path):
    """Its metadata is what JupyterLab writes for the python3 kernel (the installed kernelspec,
    ipykernel's language_info), so opening it does not mark it modified."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"] == {
        "display_name": spec.display_name,
        "language": "python",
        "name": "python3",
    }
    info = nb.metadata["language_info"]
    assert {k: v for k, v in info.items() if k != "version"} == {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
    }


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.txt")), ids=lambda p: p.stem)
def test_session_scripts_hold_no_outputs_or_secrets(path):
    text = path.read_text(encoding="utf-8")
    assert "```output" not in text, "outputs come from the kernel, never from the script"
    assert_no_secrets(path)


SECRET_PATTERNS = [
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"AKIA[0-9A-Z]{16}",  # AWS
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"xox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}",  # Google
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    # a long literal assigned to a key-like name (quotes may be escaped, as in a notebook's JSON)
    r"(?i)(?:api_?key|secret|password|passwd|token)\\?[\"']?\s*[:=]\s*\\?[\"'][^\"'\s\\]{12,}",
]


def assert_no_secrets(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in SECRET_PATTERNS:
        match = re.search(pattern, text)
        assert match is None, f"{path.name} holds something like a secret: {match.group(0)[:12]}…"


def test_the_secret_check_finds_secrets(tmp_path):
    """The check above is only worth something if it fires."""
    for leaked in (
        'OPENAI_API_KEY = "sk-proj-' + "a1B2" * 8 + '"',
        '{"source": ["api_key: \\"' + "x9" * 10 + '\\""]}',
        "token = 'hf_" + "Ab" * 17 + "'",
    ):
        path = tmp_path / "leak.ipynb"
        path.write_text(leaked, encoding="utf-8")
        with pytest.raises(AssertionError, match="something like a secret"):
            assert_no_secrets(path)


# -- 01 quickstart ----------------------------------------------------------------------------


@scripted_only
def test_01_the_model_builds_state_across_blocks_and_leaves_it_to_the_user(notebook_runs):
    run = notebook_runs("01_quickstart")
    primes = primes_below(100_000)
    palindromic = [p for p in primes if str(p) == str(p)[::-1]]
    cell = run.cell("%%reason\nHow many primes below 100,000")
    trace = run.trace_for(cell)
    assert [s.status for s in trace.steps] == ["ok"] * 4
    assert trace.steps[0].output_text == f"{len(primes)} {primes[:10]} {primes[-1]}"
    # `primes` from the first block is used by the fourth.
    assert re.search(r"\bin primes\b", trace.steps[3].code) and not defines(
        "primes", trace.steps[3]
    )
    assert trace.steps[3].output_text == f"({len(palindromic)}, {palindromic[-5:]})"
    answer = answer_of(cell)
    assert f"**{len(palindromic)}**" in answer and f"**{max(palindromic)}**" in answer
    # The user reads the model's variables and calls its function.
    assert (
        run.cell("print(len(primes)")
        .outputs[0]
        .text.startswith(f"{len(primes)} primes; the last three: {primes[-3:]}")
    )
    assert text_of(run.cell("print(len(primes)")).endswith(f"{palindromic[-5:]}\n")
    assert text_of(run.cell("# A function the model wrote")) == "(True, False)\n"
    listed = text_of(run.cell("%who")).split()
    assert {"primes", "palindromic_primes", "is_palindrome"} <= set(listed)


@scripted_only
def test_01_the_follow_up_uses_the_kept_primes_and_becomes_cells(notebook_runs):
    run = notebook_runs("01_quickstart")
    primes = primes_below(100_000)
    cell = run.cell("%%reason --cells")
    trace = run.trace_for(cell)
    (step,) = trace.steps
    assert not defines("primes", step)  # nothing recomputed: the kernel still had them
    shares = ast.literal_eval(step.output_text)
    for digit in (1, 3, 7, 9):
        expected = round(100 * sum(p % 10 == digit for p in primes) / len(primes), 2)
        assert shares[digit] == expected
        assert re.search(rf"{expected} % (end )?in {digit}\b", answer_of(cell))
    written = run.folder / f"reason-{trace.id[:8]}.ipynb"
    exported = nbformat.read(written, as_version=4)
    code_cells = [c for c in exported.cells if c.cell_type == "code"]
    assert [c.source.strip() for c in code_cells] == [step.code.strip()]
    assert code_cells[0].outputs == step.outputs  # the real outputs travel with the cell
    listing = text_of(run.cell("import glob"))
    assert listing.count("code │") == 1 and "markdown │" in listing


@scripted_only
def test_01_the_trace_holds_every_block_and_the_model_tool_split(notebook_runs):
    run = notebook_runs("01_quickstart")
    shown = text_of(run.cell("from kernel_bridge.cli import default_trace_path"))
    first = run.trace_for(run.cell("%%reason\nHow many primes below 100,000"))
    assert f"finished by: answer | blocks run: {len(first.steps)}" in shown
    for step in first.steps:
        assert f"{step.code.rstrip()}\n── what the model read back:\n{step.output_text}" in shown
    kinds = ast.literal_eval(text_of(run.cell("[(segment.kind")))
    assert kinds == [(s.kind, len(s.text)) for s in first.segments]
    assert [k for k, _ in kinds] == ["model", "tool"] * len(first.steps) + ["model"]
    output_block = text_of(run.cell("print(trace.segments[1].text)"))
    assert output_block == f"```output\n{first.steps[0].output_text}\n```\n\n"


# -- 02 market research -----------------------------------------------------------------------


def sample_closes(ticker: str, first: str, last: str) -> list[float]:
    """Monthly closes straight from the vega-datasets CSV, not through the tools."""
    import csv
    from importlib.resources import files

    rows = csv.DictReader(
        (files("vega_datasets") / "_data" / "stocks.csv").read_text().splitlines()
    )
    closes = []
    for row in rows:
        day = dt.datetime.strptime(row["date"], "%b %d %Y").date().isoformat()
        if row["symbol"] == ticker and first <= day <= last:
            closes.append(float(row["price"]))
    return closes


def risk_figures(closes: list[float]) -> dict[str, float]:
    returns = [b / a - 1 for a, b in itertools.pairwise(closes)]
    growth = closes[-1] / closes[0]
    annual = (growth ** (12 / len(returns)) - 1) * 100
    volatility = statistics.stdev(returns) * 12**0.5 * 100
    peak, drawdown = closes[0], 0.0
    for close in closes:
        peak = max(peak, close)
        drawdown = min(drawdown, close / peak - 1)
    return {
        "total return %": (growth - 1) * 100,
        "annual return %": annual,
        "annual volatility %": volatility,
        "max drawdown %": drawdown * 100,
        "return / volatility": annual / volatility,
    }


@scripted_only
def test_02_the_comparison_uses_data_up_to_the_cutoff_and_is_right(notebook_runs):
    run = notebook_runs("02_market_research")
    cell = run.cell("%%reason --tools finance --cutoff 2007-12-31")
    trace = run.trace_for(cell)
    assert [s.status for s in trace.steps] == ["ok", "ok", "ok", "error", "error"]
    fetched = trace.steps[0].output_text
    assert fetched.count("36 row(s)") == 2 and "from sample data: vega-datasets" in fetched
    assert "cutoff 2007-12-31: nothing after it" in fetched
    assert "(36, 2)" in fetched
    expected = {
        t: risk_figures(sample_closes(t, "2005-01-01", "2007-12-01")) for t in ("MSFT", "IBM")
    }
    table = trace.steps[1].output_text.splitlines()
    for row, label in zip(table[1:], expected["MSFT"], strict=True):
        assert row.startswith(label)
        msft, ibm = numbers_in(row[len(label) :])
        assert msft == pytest.approx(expected["MSFT"][label], abs=0.006)
        assert ibm == pytest.approx(expected["IBM"][label], abs=0.006)
    # The answer's table carries the same figures the kernel computed.
    answer_rows = [r for r in answer_of(cell).splitlines() if r.startswith("| ") and "%" in r]
    assert len(answer_rows) == 4
    for row, label in zip(answer_rows, list(expected["MSFT"])[:4], strict=True):
        msft, ibm = numbers_in(row)
        assert msft == pytest.approx(expected["MSFT"][label], abs=0.006)
        assert ibm == pytest.approx(expected["IBM"][label], abs=0.006)
    assert len(images(cell)) == 1  # the model's chart, a real matplotlib figure


@scripted_only
def test_02_the_cutoff_refuses_later_data_and_direct_fetches(notebook_runs):
    run = notebook_runs("02_market_research")
    trace = run.trace_for(run.cell("%%reason --tools finance --cutoff 2007-12-31"))
    peek, fetch = trace.steps[3:]
    assert peek.output_text == (
        "ToolError: stock_price: start 2008-01-01 is after end 2007-12-31 "
        "(the cutoff is 2007-12-31)"
    )
    assert fetch.output_text.startswith(
        "ImportRefusedError: import of 'yfinance' is blocked in this session: the data cutoff is "
        "2007-12-31"
    )
    prompt = text_of(run.cell("from kernel_bridge.tools import toolset"))
    assert "def stock_price(ticker: str, start: str, end: str" in prompt
    assert "The data cutoff is 2007-12-31" in prompt


@scripted_only
def test_02_hindsight_shows_what_the_cutoff_hid(notebook_runs):
    run = notebook_runs("02_market_research")
    stats = text_of(run.cell("stats.round(2)"))
    assert "MSFT" in stats and "IBM" in stats
    shown = text_of(run.cell("import pandas as pd\n\nfrom kernel_bridge.tools.finance"))
    changes = dict(re.findall(r"^(MSFT|IBM)\s+(-?[\d.]+)$", shown, re.MULTILINE))
    for ticker in ("MSFT", "IBM"):
        before = sample_closes(ticker, "2007-12-01", "2007-12-01")[0]
        after = sample_closes(ticker, "2008-12-01", "2008-12-01")[0]
        assert float(changes[ticker]) == round((after / before - 1) * 100, 1)
    assert len(images(run.cell("import matplotlib.pyplot as plt\n\nax = "))) == 1


# -- 03 tools and objects ---------------------------------------------------------------------


REPORT_CELL = "%%reason --tools documents,my_tools\nWrite"


def working_days(start: str, end: str) -> int:
    import numpy as np

    return int(np.busday_count(start, str(np.datetime64(end) + 1)))


def report_rows(run: Run) -> list[dict[str, str]]:
    """The trips table of the saved Word document, one dict per row."""
    import docx

    (table,) = docx.Document(str(run.folder / "trips.docx")).tables
    header, *rows = [[cell.text for cell in row.cells] for row in table.rows]
    assert header == ["person", "city", "usd", "working_days", "usd_per_day"]
    return [dict(zip(header, row, strict=True)) for row in rows]


def dollars(text: str) -> float:
    return float(text.replace(",", ""))


@scripted_only
def test_03_the_document_is_built_over_several_steps_and_saved(notebook_runs):
    import docx

    run = notebook_runs("03_tools_and_objects")
    cell = run.cell(REPORT_CELL)
    first = run.trace_for(cell)
    assert [s.status for s in first.steps] == ["ok"] * 4
    assert len(images(cell)) == 1  # the chart, shown in the cell ...
    document = docx.Document(str(run.folder / "trips.docx"))
    assert len(document.inline_shapes) == 1  # ... and in the document
    titles = [p.text for p in document.paragraphs if p.style.name.startswith(("Heading", "Title"))]
    assert titles == ["March trips", "Most per working day"]
    rows = report_rows(run)
    assert [r["person"] for r in rows] == ["Ana", "Ben", "Chloé", "Dev"]
    # The notebook's tools ran in the kernel: working days as numpy counts them, per-day costs.
    dates = re.findall(r"(\d{4}-\d{2}-\d{2})\s+(\d{4}-\d{2}-\d{2})", first.steps[0].output_text)
    assert [int(r["working_days"]) for r in rows] == [working_days(a, b) for a, b in dates]
    for row in rows:
        expected = dollars(row["usd"]) / int(row["working_days"])
        assert dollars(row["usd_per_day"]) == pytest.approx(expected, abs=0.01)
    total = f"{sum(dollars(r['usd']) for r in rows):,.2f}"
    assert first.steps[3].output_text.startswith(total)
    assert f"**{total} US dollars**" in answer_of(cell)
    # The model's `report` is a live object: the user reads it, adds to it, and saves it.
    inspected = text_of(run.cell("[paragraph.text for paragraph in report.paragraphs]"))
    assert f"'Total: {total} US dollars for {len(rows)} trips.'" in inspected
    assert "Approved by the team lead." in [p.text for p in document.paragraphs]


@scripted_only
def test_03_a_later_question_adds_to_the_same_document(notebook_runs):
    run = notebook_runs("03_tools_and_objects")
    second = run.trace_for(run.cell("%%reason --tools documents,my_tools --continue"))
    assert not defines("report", second.steps[0])  # the object from the first run
    best = max(report_rows(run), key=lambda r: dollars(r["usd_per_day"]))
    sentence = f"{best['person']}'s trip to {best['city']}: {best['usd_per_day']} US dollars"
    assert sentence in second.steps[0].output_text
    latest = text_of(run.cell("[paragraph.text for paragraph in report.paragraphs]["))
    assert ast.literal_eval(latest)[:2] == ["Approved by the team lead.", "Most per working day"]


@scripted_only
def test_03_a_separate_kernel_gets_the_tools_but_not_the_notebook(notebook_runs):
    run = notebook_runs("03_tools_and_objects")
    trace = run.trace_for(run.cell("%%reason --isolated --tools my_tools"))
    assert [s.status for s in trace.steps] == ["ok", "error", "ok"]
    value, rates = ast.literal_eval(trace.steps[0].output_text)
    assert value == pytest.approx(250 * rates["EUR"])  # the constructor's rates arrived
    assert trace.steps[1].output_text.endswith("NameError: name 'trips' is not defined")
    sidecar_pid, token_seen = trace.steps[2].output_text.split()
    assert token_seen == "False"  # secret-looking variables are not passed on
    here = text_of(run.cell("print(os.getpid()")).split()
    assert here[0] != sidecar_pid and here[1:] == ["True", "False"]
    status = text_of(run.cell("%reason_kernel status"))
    assert status.startswith(f"sidecar kernel: running, pid {sidecar_pid}, workspace ")


@scripted_only
def test_03_the_guard_refuses_imports_but_is_not_a_sandbox(notebook_runs):
    run = notebook_runs("03_tools_and_objects")
    trace = run.trace_for(run.cell("%%reason --authorized-imports math,statistics"))
    assert [s.status for s in trace.steps] == ["ok", "error", "ok"]
    usd = [dollars(r["usd"]) for r in report_rows(run)]
    assert float(trace.steps[0].output_text) == pytest.approx(statistics.pstdev(usd))
    assert trace.steps[1].output_text == (
        "ImportRefusedError: import of 'os' is not allowed in this session; allowed imports: "
        "math, statistics"
    )
    assert trace.steps[2].output_text == "True b'PK\\x03\\x04'"  # os reached anyway; a file read
    assert text_of(run.cell("import shutil")) == "shutil\n"  # your cells are not guarded
