"""Tools inside the kernel: the smolagents-shaped API, installation with constructor arguments,
the finance tools' strict cutoff, the guards, and offline answers from real sample data.

Yahoo Finance is not reachable from here. Where a test needs Yahoo's answers it uses
``YahooStandIn``: frames shaped like yfinance 1.7's output (exchange-time-zone index, the same
columns), written for these tests, not recorded from the network; the test names say so.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import time
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernel_bridge import Kernel
from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers.scripted import ScriptedSampler
from kernel_bridge.tools import Tool, Toolbox, ToolError, describe, load_toolsets, tool, toolset
from kernel_bridge.tools.finance import (
    CompanyFinancials,
    CompanyInfo,
    Dividends,
    StockPrice,
    bars_until,
)
from kernel_bridge.tools.guard import ImportGuard
from kernel_bridge.tools.market import SAMPLE_SOURCE, MarketData

NY = "America/New_York"


# -- stand-ins and tools written for these tests ----------------------------------------------


class TickerStandIn:
    """Answers like ``yfinance.Ticker`` (shape only; data made up for the tests)."""

    def __init__(self, symbol: str, calls: list[tuple]) -> None:
        self.symbol = symbol
        self.calls = calls

    def history(self, start, end, interval, **kwargs):
        self.calls.append(("history", self.symbol, start, end, interval))
        # Deliberately ignores `end`: the cutoff must hold even when a source sends more.
        index = pd.date_range("2008-06-25", "2008-07-08", freq="D", tz=NY, name="Date")
        close = [float(i) for i in range(len(index))]
        return pd.DataFrame(
            {
                "Open": close,
                "High": close,
                "Low": close,
                "Close": close,
                "Adj Close": close,
                "Volume": [1000] * len(index),
            },
            index=index,
        )

    def _statement(self, freq):
        ends = ["2008-06-30", "2008-03-31", "2007-12-31", "2007-09-30"]
        if freq == "yearly":
            ends = ["2008-06-30", "2007-06-30", "2006-06-30"]
        return pd.DataFrame(
            {pd.Timestamp(e): [100.0 + i, 10.0 + i] for i, e in enumerate(ends)},
            index=["TotalRevenue", "NetIncome"],
        )

    def get_income_stmt(self, freq):
        self.calls.append(("income", self.symbol, freq))
        return self._statement(freq)

    get_balance_sheet = get_income_stmt
    get_cash_flow = get_income_stmt

    def get_info(self):
        self.calls.append(("info", self.symbol))
        return {
            "symbol": self.symbol,
            "longName": "Example Corp",
            "sector": "Technology",
            "marketCap": 123,
            "currentPrice": 45.6,
            "longBusinessSummary": "Launched a product in 2024.",
        }

    def get_dividends(self, period):
        self.calls.append(("dividends", self.symbol, period))
        index = pd.DatetimeIndex(
            ["2008-05-14", "2008-06-30", "2008-07-01", "2008-08-13"], tz=NY, name="Date"
        )
        return pd.Series([0.1, 0.2, 0.3, 0.4], index=index, name="Dividends")


class YahooStandIn:
    """Stands in for the live Yahoo Finance source; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def ticker(self, symbol: str) -> TickerStandIn:
        return TickerStandIn(symbol, self.calls)

    def is_data_error(self, error: BaseException) -> bool:
        return isinstance(error, LookupError)


class UnreachableYahoo(YahooStandIn):
    """A live source whose network is down."""

    def ticker(self, symbol: str) -> TickerStandIn:
        raise ConnectionError("could not resolve host query2.finance.yahoo.com")


class Scaler(Tool):
    name = "scale"
    description = "Multiply x by the factor this tool was built with."
    inputs = {"x": {"type": "number", "description": "The number."}}  # noqa: RUF012
    output_type = "number"

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def forward(self, x: float) -> float:
        return x * self.factor


class Broken(Tool):
    name = "broken"
    description = "Always fails."
    inputs = {}  # noqa: RUF012
    output_type = "null"

    def forward(self) -> None:
        return {}["missing"]


class Slow(Tool):
    name = "slow"
    description = "Sleeps."
    inputs = {"seconds": {"type": "number", "description": "How long."}}  # noqa: RUF012
    output_type = "null"

    def forward(self, seconds: float) -> None:
        time.sleep(seconds)


def offline_market(tmp_path: Path) -> MarketData:
    return MarketData(cache_dir=tmp_path / "cache", offline=True)


def sample_rows(ticker: str) -> list[tuple[str, float]]:
    """The sample data as the CSV in the installed package has it, read without pandas."""
    text = (files("vega_datasets") / "_data" / "stocks.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return [
        (dt.datetime.strptime(r["date"], "%b %d %Y").date().isoformat(), float(r["price"]))
        for r in rows
        if r["symbol"] == ticker
    ]


# -- the tool API ---------------------------------------------------------------------------


def test_function_tool_takes_name_types_and_docstring():
    @tool
    def growth(first: float, last: float, years: int = 1) -> float:
        """Compound annual growth rate from first to last over years."""
        return (last / first) ** (1 / years) - 1

    assert growth.name == "growth"
    assert growth.inputs["first"]["type"] == "number"
    assert growth.inputs["years"] == {"type": "integer", "description": "", "nullable": True}
    assert growth.output_type == "number"
    assert growth(100, 121, years=2) == pytest.approx(0.1)
    assert describe(growth).splitlines()[0] == (
        "def growth(first: float, last: float, years: int = 1) -> float:"
    )


def test_tool_class_inputs_must_match_forward():
    with pytest.raises(ToolError, match="forward\\(\\) takes \\['x'\\] but inputs declares"):

        class Wrong(Tool):
            name = "wrong"
            description = "d"
            inputs = {"y": {"type": "number", "description": ""}}  # noqa: RUF012
            output_type = "number"

            def forward(self, x):
                return x


def test_function_without_docstring_is_refused():
    def bare(x: int) -> int:
        return x

    with pytest.raises(ToolError, match="has no docstring"):
        Toolbox([bare])


def test_wrong_arguments_are_a_tool_error_that_shows_the_signature():
    with pytest.raises(ToolError, match=r"scale\(x: float\): missing a required argument: 'x'"):
        Scaler(2)()


def test_a_failing_tool_raises_one_readable_tool_error():
    with pytest.raises(ToolError) as info:
        Broken()()
    assert str(info.value) == "broken() failed: KeyError: 'missing'"


@pytest.fixture
def greeter():
    """A smolagents tool class with a constructor argument."""
    smolagents = pytest.importorskip("smolagents")  # in the test extra; skipped only elsewhere

    class Greeter(smolagents.Tool):
        name = "greet"
        description = "Greets someone."
        inputs = {"who": {"type": "string", "description": "Whom to greet."}}  # noqa: RUF012
        output_type = "string"

        def __init__(self, greeting: str = "Hello") -> None:
            super().__init__()
            self.greeting = greeting

        def forward(self, who: str) -> str:
            return f"{self.greeting}, {who}!"

    return Greeter


def test_smolagents_tools_are_accepted_as_they_are(greeter):
    box = Toolbox([greeter("Bonjour")])
    assert box.tools[0].greeting == "Bonjour"
    assert "def greet(who: str) -> str:" in box.prompt()
    assert "who: Whom to greet." in box.prompt()


def test_tool_names_must_be_unique():
    with pytest.raises(ToolError, match="two tools are named scale"):
        Toolbox([Scaler(1), Scaler(2)])


# -- installed in a kernel --------------------------------------------------------------------


@pytest.fixture
def cutoff_tools(tmp_path):
    return toolset("finance", cutoff="2008-06-30", market=offline_market(tmp_path))


async def test_constructor_arguments_survive_installation_in_a_sidecar_kernel(cutoff_tools):
    box = Toolbox.of([cutoff_tools, Scaler(7)])
    async with Kernel(timeout=20) as k:
        await box.install(k)
        assert (await k.execute("scale(6)")).output_text == "42"
        assert (await k.execute("stock_price.cutoff_date")).output_text == (
            "datetime.date(2008, 6, 30)"
        )
        # every finance tool shares the session's cutoff
        result = await k.execute("[t.cutoff_date.isoformat() for t in (company_info, dividends)]")
        assert result.output_text == "['2008-06-30', '2008-06-30']"


async def test_constructor_arguments_survive_installation_in_a_remote_kernel(
    kernel_gateway, cutoff_tools
):
    box = Toolbox.of([cutoff_tools, Scaler(7)])
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token, timeout=20) as k:
        await box.install(k)
        assert (await k.execute("scale(6)")).output_text == "42"
        result = await k.execute("stock_price.cutoff_date.isoformat()")
        assert result.output_text == "'2008-06-30'"
        refused = await k.execute("import yfinance")
        assert refused.status == "error" and refused.error_name == "ImportRefusedError"


async def test_smolagents_tool_keeps_its_constructor_argument_in_the_kernel(greeter):
    async with Kernel(timeout=20) as k:
        await Toolbox([greeter("Bonjour")]).install(k)
        assert (await k.execute("greet('Ada')")).output_text == "'Bonjour, Ada!'"


async def test_tools_are_installed_again_after_the_kernel_dies():
    async with Kernel(timeout=20) as k:
        await Toolbox([Scaler(3)]).install(k)
        died = await k.execute("import os; os._exit(1)")
        assert died.status == "died"
        assert "[the setup code (tools) ran again]" in died.output_text
        assert (await k.execute("scale(5)")).output_text == "15"


async def test_a_tool_error_reaches_the_model_as_one_line(kernel):
    await Toolbox([Broken()]).install(kernel)
    result = await kernel.execute("broken()")
    assert result.status == "error"
    assert result.output_text == "ToolError: broken() failed: KeyError: 'missing'"


async def test_a_slow_tool_hits_the_step_timeout_and_the_kernel_lives(kernel):
    await Toolbox([Slow()]).install(kernel)
    result = await kernel.execute("slow(60)", timeout=1)
    assert result.status == "timeout"
    assert (await kernel.execute("slow(0); 'alive'")).output_text == "'alive'"


async def test_a_document_is_built_over_several_steps_and_saved_in_the_workspace(kernel):
    docx = pytest.importorskip("docx")
    await toolset("documents").install(kernel)
    assert (await kernel.execute("doc = new_document('Quarterly report')")).status == "ok"
    await kernel.execute("import pandas as pd\ndf = pd.DataFrame({'price': [1.5, 2.25]})")
    await kernel.execute("doc.add_paragraph('Prices rose.'); t = add_table(doc, df)")
    await kernel.execute(
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(); ax.plot([1, 2]); add_figure(doc, fig)"
    )
    saved = await kernel.execute("doc.save('report.docx')")
    assert saved.new_files == ["report.docx"]
    document = docx.Document(str(kernel.workspace_path / "report.docx"))
    texts = [p.text for p in document.paragraphs]
    assert texts[0] == "Quarterly report" and "Prices rose." in texts
    cells = [[c.text for c in row.cells] for row in document.tables[0].rows]
    assert cells == [["", "price"], ["0", "1.50"], ["1", "2.25"]]
    assert len(document.inline_shapes) == 1  # the figure


# -- the cutoff -------------------------------------------------------------------------------


def test_daily_bars_up_to_and_including_the_cutoff_day_are_kept():
    frame = pd.DataFrame({"Close": range(5)}, index=pd.date_range("2024-03-06", periods=5, tz=NY))
    kept = bars_until(frame, dt.date(2024, 3, 8), "1d")
    assert [d.isoformat() for d in kept.index.date] == ["2024-03-06", "2024-03-07", "2024-03-08"]


def test_intraday_bars_are_judged_by_their_end_in_exchange_time():
    index = pd.DatetimeIndex(
        [
            "2024-03-08 15:30",  # ends 16:30 on the cutoff day: kept
            "2024-03-08 23:00",  # ends at midnight: kept
            "2024-03-08 23:30",  # ends 00:30 the next day: removed
            "2024-03-09 00:00",
        ],
        tz=NY,
    )
    frame = pd.DataFrame({"Close": [1, 2, 3, 4]}, index=index)
    kept = bars_until(frame, dt.date(2024, 3, 8), "1h")
    assert list(kept["Close"]) == [1, 2]


def test_the_cutoff_day_ends_in_the_index_time_zone_not_in_utc():
    # 2024-03-08 22:00 in New York is already 2024-03-09 in UTC; it is still the cutoff day.
    ny = pd.DataFrame({"Close": [1]}, index=pd.DatetimeIndex(["2024-03-08 22:00"], tz=NY))
    assert len(bars_until(ny, dt.date(2024, 3, 8), "1m")) == 1
    # 2024-03-09 08:00 in Tokyo is 2024-03-08 in UTC; it is after the cutoff day there.
    tokyo = pd.DataFrame(
        {"Close": [1]}, index=pd.DatetimeIndex(["2024-03-09 08:00"], tz="Asia/Tokyo")
    )
    assert len(bars_until(tokyo, dt.date(2024, 3, 8), "1m")) == 0


def test_a_monthly_bar_needs_its_whole_month_before_the_cutoff():
    frame = pd.DataFrame({"Close": [1, 2]}, index=pd.DatetimeIndex(["2008-05-01", "2008-06-01"]))
    assert list(bars_until(frame, dt.date(2008, 6, 29), "1mo")["Close"]) == [1]
    assert list(bars_until(frame, dt.date(2008, 6, 30), "1mo")["Close"]) == [1, 2]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["1m", "30m", "1h", "1d", "1wk", "1mo"]),
    st.sampled_from([None, "UTC", NY, "Asia/Tokyo"]),
    st.dates(dt.date(2020, 1, 1), dt.date(2020, 12, 31)),
    st.integers(0, 400),
)
# Drawn once: a monthly bar labelled 2020-02-08 02:00 in New York "ends" at 2020-03-08 02:00,
# a time the daylight-saving change skips; bars_until raised pandas' nonexistent-time error.
@example(interval="1mo", tz=NY, cutoff=dt.date(2020, 1, 1), offset_hours=4)
def test_no_kept_bar_ends_after_the_cutoff(interval, tz, cutoff, offset_hours):
    start = pd.Timestamp("2020-01-01") + pd.Timedelta(hours=offset_hours)
    index = pd.date_range(start, periods=200, freq="7h", tz=tz)
    frame = pd.DataFrame({"Close": range(len(index))}, index=index)
    kept = bars_until(frame, cutoff, interval)
    from kernel_bridge.tools.finance import bar_end, end_of_day

    boundary = end_of_day(index, cutoff)
    assert (bar_end(pd.DatetimeIndex(kept.index), interval) <= boundary).all()
    dropped = frame.drop(kept.index)
    assert (bar_end(pd.DatetimeIndex(dropped.index), interval) > boundary).all()


def test_the_cutoff_holds_across_daylight_saving_changes():
    # New York, autumn: a monthly bar labelled 2020-10-01 01:30 ends at 2020-11-01 01:30, a wall
    # time that happens twice; either way it ends on 2020-11-01.
    autumn = pd.DataFrame({"Close": [1]}, index=pd.DatetimeIndex(["2020-10-01 01:30"], tz=NY))
    assert len(bars_until(autumn, dt.date(2020, 10, 31), "1mo")) == 0
    assert len(bars_until(autumn, dt.date(2020, 11, 1), "1mo")) == 1
    # A daily bar ends at the next local midnight, not 24 hours later: the day of the change
    # has 23 hours in spring and 25 in autumn.
    days = pd.DataFrame(
        {"Close": [1, 2]}, index=pd.DatetimeIndex(["2020-03-08", "2020-11-01"], tz=NY)
    )
    assert list(bars_until(days, dt.date(2020, 3, 8), "1d")["Close"]) == [1]
    assert list(bars_until(days, dt.date(2020, 11, 1), "1d")["Close"]) == [1, 2]
    # Havana skips midnight itself in spring (00:00 -> 01:00) and repeats it in autumn; a day
    # begins at the first instant that has its date.
    havana = "America/Havana"
    spring = pd.DataFrame(
        {"Close": [1, 2]}, index=pd.DatetimeIndex(["2020-03-07", "2020-03-08 01:00"], tz=havana)
    )
    assert list(bars_until(spring, dt.date(2020, 3, 7), "1d")["Close"]) == [1]
    fall = pd.DataFrame({"Close": [1]}, index=pd.DatetimeIndex(["2020-10-31"], tz=havana))
    assert len(bars_until(fall, dt.date(2020, 10, 31), "1d")) == 1
    assert len(bars_until(fall, dt.date(2020, 10, 30), "1d")) == 0


def test_stock_price_removes_rows_a_yahoo_standin_sends_past_the_cutoff(tmp_path, capsys):
    yahoo = YahooStandIn()
    market = MarketData(cache_dir=tmp_path, offline=False, yahoo=yahoo)
    prices = StockPrice(cutoff_date="2008-06-30", market=market)
    frame = prices("AAPL", "2008-06-01", "2008-12-31")
    assert frame.index.max().date() == dt.date(2008, 6, 30)
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    # the request itself never asked past the cutoff (end is exclusive in yfinance)
    assert yahoo.calls == [("history", "AAPL", "2008-06-01", "2008-07-01", "1d")]
    said = capsys.readouterr().out
    assert "from Yahoo Finance (live, via yfinance)" in said
    assert "cutoff 2008-06-30: 8 later row(s) removed" in said


def test_statements_appear_only_once_filed_by_the_cutoff(tmp_path):
    market = MarketData(cache_dir=tmp_path, offline=False, yahoo=YahooStandIn())
    quarterly = CompanyFinancials(cutoff_date="2008-06-30", market=market)(
        "MSFT", "income", "quarterly"
    )
    # 2008-06-30 and 2008-03-31 (filed by 2008-05-15) ... 2008-03-31 + 45 days = 2008-05-15: kept
    assert [c.date().isoformat() for c in quarterly.columns] == [
        "2008-03-31",
        "2007-12-31",
        "2007-09-30",
    ]
    annual = CompanyFinancials(cutoff_date="2008-06-30", market=market)("MSFT", "income")
    assert [c.date().isoformat() for c in annual.columns] == ["2007-06-30", "2006-06-30"]


def test_company_info_keeps_only_timeless_fields_with_a_cutoff(tmp_path):
    market = MarketData(cache_dir=tmp_path, offline=False, yahoo=YahooStandIn())
    info = CompanyInfo(cutoff_date="2008-06-30", market=market)("XMPL")
    assert info == {"symbol": "XMPL", "longName": "Example Corp", "sector": "Technology"}
    assert "marketCap" in CompanyInfo(market=market)("XMPL")  # no cutoff: everything


def test_dividends_stop_at_the_cutoff(tmp_path):
    market = MarketData(cache_dir=tmp_path, offline=False, yahoo=YahooStandIn())
    paid = Dividends(cutoff_date="2008-06-30", market=market)("MSFT")
    assert list(paid) == [0.1, 0.2]
    assert list(Dividends(market=market)("MSFT", start="2008-06-01", end="2008-07-31")) == [
        0.2,
        0.3,
    ]


def test_a_cutoff_is_applied_to_cached_answers_too(tmp_path):
    live = MarketData(cache_dir=tmp_path, offline=False, yahoo=YahooStandIn())
    StockPrice(market=live)("AAPL", "2008-06-01", "2008-12-31")  # cached without a cutoff
    offline = MarketData(cache_dir=tmp_path, offline=True)
    frame = StockPrice(cutoff_date="2008-06-30", market=offline)("AAPL", "2008-06-01", "2008-12-31")
    assert frame.index.max().date() == dt.date(2008, 6, 30)


# -- offline, cache and sample data -----------------------------------------------------------


def test_offline_prices_come_from_the_sample_data_and_say_so(tmp_path, capsys):
    prices = StockPrice(market=offline_market(tmp_path))
    frame = prices("IBM", "2005-01-01", "2005-12-31", interval="1mo")
    expected = [(d, p) for d, p in sample_rows("IBM") if d.startswith("2005-")]
    assert [(i.date().isoformat(), c) for i, c in frame["Close"].items()] == expected
    said = capsys.readouterr().out
    assert SAMPLE_SOURCE in said and "monthly closing prices only" in said


def test_a_network_failure_falls_back_to_the_cache_then_to_sample_data(tmp_path, capsys):
    market = MarketData(cache_dir=tmp_path, offline=False, yahoo=YahooStandIn())
    StockPrice(market=market)("AAPL", "2008-06-01", "2008-12-31")
    down = MarketData(cache_dir=tmp_path, offline=False, yahoo=UnreachableYahoo())
    capsys.readouterr()
    cached = StockPrice(market=down)("AAPL", "2008-06-26", "2008-06-30")
    assert "from cache: Yahoo Finance data fetched on" in capsys.readouterr().out
    assert [d.isoformat() for d in cached.index.date] == [
        "2008-06-26",
        "2008-06-27",
        "2008-06-28",
        "2008-06-29",
        "2008-06-30",
    ]
    sample = StockPrice(market=down)("MSFT", "2001-01-01", "2001-03-31", interval="1mo")
    assert list(sample["Close"]) == [p for d, p in sample_rows("MSFT") if d < "2001-04"][-3:]


def test_real_yfinance_without_network_falls_back_to_sample_data(tmp_path, capsys):
    # This machine has no route to Yahoo: yfinance itself fails, and the sample data answers.
    prices = StockPrice(market=MarketData(cache_dir=tmp_path, offline=False))
    frame = prices("GOOG", "2009-01-01", "2009-03-31", interval="1mo")
    assert list(frame["Close"]) == [p for d, p in sample_rows("GOOG") if "2009-01" <= d < "2009-04"]
    assert SAMPLE_SOURCE in capsys.readouterr().out


def test_offline_without_data_is_a_clear_error_and_no_numbers(tmp_path):
    prices = StockPrice(market=offline_market(tmp_path))
    with pytest.raises(ToolError, match=r"no 1d prices for TSLA .* offline; nothing in the cache"):
        prices("TSLA", "2020-01-01", "2020-02-01")
    with pytest.raises(ToolError, match="covers 2000-01 to 2010-03 only"):
        prices("AAPL", "2015-01-01", "2015-02-01")
    with pytest.raises(ToolError, match="offline and nothing is cached"):
        CompanyFinancials(market=offline_market(tmp_path))("AAPL", "income")


def test_the_offline_switch_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_BRIDGE_OFFLINE", "1")
    assert MarketData(cache_dir=tmp_path).offline
    monkeypatch.setenv("KERNEL_BRIDGE_OFFLINE", "0")
    assert not MarketData(cache_dir=tmp_path).offline


def test_info_is_cached_as_json(tmp_path):
    MarketData(cache_dir=tmp_path, offline=False, yahoo=YahooStandIn()).info("XMPL")
    cached = json.loads((tmp_path / "info" / "XMPL.json").read_text())
    assert cached["longName"] == "Example Corp"
    again = MarketData(cache_dir=tmp_path, offline=True).info("xmpl")
    assert again.data == cached and again.source.startswith("cache:")


# -- guards -----------------------------------------------------------------------------------


BYPASSES = [
    "import yfinance",
    "from yfinance import Ticker",
    "import yfinance.shared",
    "import importlib; importlib.import_module('yfinance')",
    "__import__('yfinance')",
    "import curl_cffi.requests",
]


async def test_model_code_cannot_import_yfinance_or_its_http_layer_under_a_cutoff(
    kernel, cutoff_tools
):
    await cutoff_tools.install(kernel)
    for code in BYPASSES:
        result = await kernel.execute(code)
        assert result.status == "error", code
        assert result.output_text.startswith("ImportRefusedError: import of '"), code
        assert "blocked in this session: the data cutoff is 2008-06-30" in result.output_text
    looked_up = await kernel.execute(
        "import urllib.request\nurllib.request.urlopen('https://query1.finance.yahoo.com/v8')"
    )
    assert looked_up.status == "error"
    assert "connections to query1.finance.yahoo.com are blocked" in looked_up.output_text
    # other lookups, and the libraries' own imports, still work
    fine = await kernel.execute(
        "import socket, pandas\nsocket.getaddrinfo('localhost', 80) and 'ok'"
    )
    assert fine.output_text == "'ok'"


async def test_the_tools_own_yfinance_import_passes_the_guard(tmp_path):
    # The tool imports yfinance itself (library code) while the model may not; with no network
    # the live fetch then fails and the sample data answers.
    box = toolset("finance", cutoff="2009-06-30", cache_dir=str(tmp_path), offline=False)
    async with Kernel(timeout=30) as k:
        await box.install(k)
        result = await k.execute(
            "df = stock_price('MSFT', '2009-01-01', '2009-12-31', '1mo')\n"
            "import sys; print('yfinance' in sys.modules, len(df))"
        )
        assert result.status == "ok", result.output_text
        assert result.output_text.splitlines()[-1] == "True 6"
        assert (await k.execute("import yfinance")).error_name == "ImportRefusedError"


async def test_authorized_imports_refuse_the_rest_with_the_list(kernel):
    await Toolbox.of([], authorized_imports=["math", "pandas"]).install(kernel)
    assert (await kernel.execute("import math; math.sqrt(4)")).output_text == "2.0"
    # a package allows its submodules, and libraries import what they need (numpy here)
    ok = await kernel.execute("import pandas.api.types; import pandas as pd; len(pd.Series([1]))")
    assert ok.output_text == "1"
    refused = await kernel.execute("import os")
    assert refused.output_text == (
        "ImportRefusedError: import of 'os' is not allowed in this session; "
        "allowed imports: math, pandas"
    )


def test_an_inactive_guard_lets_everything_through():
    guard = ImportGuard(["json"], reason="test")
    guard.active = False
    guard.check("json")
    with pytest.raises(ImportError), guard.enabled():
        guard.check("json")
    assert not guard.active


class InProcessExecutor:
    """An executor in this process, as ``ShellExecutor`` is: it takes the tools as objects."""

    started = True

    def __init__(self) -> None:
        self.namespace: dict = {}
        self.guards: list = []

    async def start(self) -> InProcessExecutor:
        return self

    async def execute(self, code, timeout=None, on_output=None):
        raise NotImplementedError

    async def add_setup(self, setup) -> None:
        self.namespace.update(setup.namespace())
        self.guards = list(setup.guards())


async def test_tools_install_into_any_executor_through_its_add_setup():
    executor = InProcessExecutor()
    box = Toolbox([Scaler(3)], blocked_imports=["yfinance"], blocked_hosts=["example.com"])
    await box.install(executor)
    assert executor.namespace["scale"].factor == 3
    assert [type(g).__name__ for g in executor.guards] == ["ImportGuard", "HostGuard"]
    assert executor.guards[0].blocked == ("yfinance",)


async def test_an_executor_without_add_setup_is_refused():
    class NoSetup:
        started = True

        async def start(self):
            return self

        async def execute(self, code, timeout=None, on_output=None):
            raise NotImplementedError

    with pytest.raises(TypeError, match="cannot install tools into NoSetup: it has no add_setup"):
        await Toolbox([Scaler(3)]).install(NoSetup())


# -- from the Reasoner, the CLI and the magic -------------------------------------------------


STOCK_SCRIPT = """<think>
I will look at the prices.
```python
prices = stock_price("AAPL", "2008-01-01", "2008-12-31", interval="1mo")
print(round(prices["Close"].mean(), 2), len(prices))
```
</think>
<answer>done</answer>"""


async def test_the_reasoner_installs_the_tools_and_describes_them(tmp_path):
    box = toolset("finance", cutoff="2008-06-30", market=offline_market(tmp_path))
    sampler = ScriptedSampler(STOCK_SCRIPT)
    async with Reasoner(sampler, tools=box, limits=Limits(step_timeout=30)) as reasoner:
        trace = await reasoner.run("Mean AAPL close in 2008?")
    system = trace.messages[0]["content"]
    assert "def stock_price(ticker: str, start: str, end: str, interval: str = '1d')" in system
    assert "The data cutoff is 2008-06-30" in system
    expected = [p for d, p in sample_rows("AAPL") if "2008-01" <= d < "2008-07"]
    step = trace.steps[0]
    assert step.status == "ok"
    assert step.output_text.splitlines()[-1] == f"{round(sum(expected) / 6, 2)} 6"


def test_cli_reason_with_finance_tools_and_a_cutoff(tmp_path, monkeypatch, capsys):
    from kernel_bridge.cli import main

    monkeypatch.setenv("KERNEL_BRIDGE_OFFLINE", "1")
    monkeypatch.setenv("KERNEL_BRIDGE_CACHE", str(tmp_path / "cache"))
    script = tmp_path / "script.txt"
    script.write_text(STOCK_SCRIPT)
    trace_path = tmp_path / "t.jsonl"
    status = main(
        [
            "reason",
            "Mean AAPL close?",
            "--model",
            f"scripted:{script}",
            "--tools",
            "finance",
            "--cutoff",
            "2008-06-30",
            "--trace",
            str(trace_path),
            "--no-color",
        ]
    )
    assert status == 0
    from kernel_bridge.trace import load_traces

    (trace,) = load_traces(trace_path)
    assert trace.steps[0].output_text.splitlines()[-1].endswith(" 6")


OWN_TOOLS = '''
SECRET = 14


def triple(x: int) -> int:
    """Three times x."""
    return 3 * x


def plus_secret(x: int) -> int:
    """x plus a number only this file knows."""
    return x + SECRET


TOOLS = [triple, plus_secret]
'''

OWN_TOOLS_SCRIPT = """<think>
```python
print(triple(plus_secret(0)))
```
</think>
<answer>42</answer>"""


@pytest.mark.parametrize("form", ["file", "module"])
def test_cli_installs_your_own_tools_named_module_colon_attribute(
    form, tmp_path, monkeypatch, capsys
):
    from kernel_bridge.cli import main
    from kernel_bridge.trace import load_traces

    project = tmp_path / "project"
    project.mkdir()
    (project / "kb_own_tools.py").write_text(OWN_TOOLS)
    (tmp_path / "script.txt").write_text(OWN_TOOLS_SCRIPT)
    monkeypatch.chdir(project)  # the kernel runs in its own workspace: it cannot import these
    monkeypatch.delitem(sys.modules, "kb_own_tools", raising=False)
    spec = "kb_own_tools.py:TOOLS" if form == "file" else "kb_own_tools:TOOLS"
    trace_path = tmp_path / "t.jsonl"
    args = ["reason", "Compute.", "--model", f"scripted:{tmp_path / 'script.txt'}"]
    status = main([*args, "--tools", spec, "--trace", str(trace_path), "--no-color"])
    assert status == 0
    (trace,) = load_traces(trace_path)
    assert trace.steps[0].status == "ok", trace.steps[0].output_text
    assert trace.steps[0].output_text.strip() == "42"
    assert "def triple(x: int) -> int" in trace.messages[0]["content"]  # described to the model


def test_own_tools_from_the_working_directory_travel_by_value(tmp_path, monkeypatch):
    """A kernel elsewhere (remote, or another working directory) cannot import the module."""
    import subprocess

    import cloudpickle

    from kernel_bridge.tools import import_tools

    (tmp_path / "kb_travelling_tools.py").write_text(OWN_TOOLS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "kb_travelling_tools", raising=False)
    box = import_tools("kb_travelling_tools:TOOLS")
    assert box.names == ["triple", "plus_secret"]
    code = "import pickle, sys; tools = pickle.load(sys.stdin.buffer); print(tools[1](1))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=cloudpickle.dumps(box.tools),
        capture_output=True,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "15"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cutoff", "2008-06-30"], "--cutoff needs a toolset that has data"),
        (["--tools", "weather"], "unknown toolset 'weather'"),
        (["--tools", "finance", "--cutoff", "June"], "cutoff must be a date like"),
        (["--tools", "missing_file.py:TOOLS"], "no file"),
        (["--tools", "json:no_such_thing"], "json has no attribute 'no_such_thing'"),
        (["--tools", "no_such_module_here:TOOLS"], "importing no_such_module_here failed"),
        (["--tools", "json:JSONDecoder"], "not a tool"),
        (["--tools", "json:"], "name tools as module:attribute"),
    ],
)
def test_cli_tool_options_fail_with_one_line(args, message, capsys):
    from kernel_bridge.cli import main

    assert main(["reason", "q", "--model", "scripted:/nonexistent", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_load_toolsets_merges_and_keeps_guards():
    box = load_toolsets("finance, documents", cutoff="2008-06-30", authorized_imports=["math"])
    assert box.names == [
        "stock_price",
        "company_financials",
        "company_info",
        "dividends",
        "new_document",
        "add_table",
        "add_figure",
    ]
    assert box.blocked_imports == ["curl_cffi", "yfinance"]
    assert box.authorized_imports == ["math"]
    assert "Only these imports are allowed: math." in box.prompt()
