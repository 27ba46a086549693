"""Market data behind the finance tools: Yahoo Finance live, a parquet cache, and sample data.

Every live answer is written to the cache (parquet; JSON for company info). With no network, or
with ``KERNEL_BRIDGE_OFFLINE=1``, the cache answers; for prices, so does real sample data that
ships on PyPI: the ``vega-datasets`` package's ``stocks.csv``, monthly closes of AAPL, AMZN, GOOG,
IBM and MSFT from 2000-01 to 2010-03. Every ``Answer`` names its source. Nothing is invented: with
no source that has the data, the call fails and says what is available.

The cutoff is applied by the tools (``kernel_bridge.tools.finance``), on whatever source answered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kernel_bridge.errors import UserError

OFFLINE_ENV = "KERNEL_BRIDGE_OFFLINE"
SAMPLE_TICKERS = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")
SAMPLE_SOURCE = (
    "sample data: vega-datasets stocks.csv (monthly closes of AAPL, AMZN, GOOG, IBM, MSFT, "
    "2000-01 to 2010-03)"
)
LIVE_SOURCE = "Yahoo Finance (live, via yfinance)"
INTERVALS = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo")
STATEMENTS = ("income", "balance", "cashflow")
PERIODS = ("annual", "quarterly")


class MarketDataError(UserError):
    """No source could answer; the message says what was tried and what is available."""


@dataclass
class Answer:
    """Data and the source it came from (plus notes for the model, e.g. a coarser interval)."""

    data: Any
    source: str
    notes: list[str] = field(default_factory=list)
    interval: str | None = None  # the bar length of price data, when not the one asked for


def default_cache_dir() -> Path:
    base = os.environ.get("KERNEL_BRIDGE_CACHE") or Path.home() / ".cache" / "kernel-bridge"
    return Path(base) / "market"


def offline_from_env() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class YahooFinance:
    """The live source: a thin layer over ``yfinance.Ticker`` (imported on first use)."""

    def ticker(self, symbol: str) -> Any:
        import yfinance

        return yfinance.Ticker(symbol)

    def is_data_error(self, error: BaseException) -> bool:
        """True when Yahoo answered that the data does not exist (not a network failure)."""
        try:
            from yfinance.exceptions import YFException
        except ImportError:  # pragma: no cover
            return False
        return isinstance(error, YFException) and "rate" not in type(error).__name__.lower()


class MarketData:
    """Answers price, statement, dividend and company-info requests from the best source at hand.

    ``yahoo`` is the live source (``YahooFinance()`` by default; tests pass a stand-in).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        yahoo: Any = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.offline = offline_from_env() if offline is None else offline
        self.yahoo = yahoo or YahooFinance()

    # -- prices -------------------------------------------------------------------------------

    def history(self, ticker: str, start: dt.date, end: dt.date, interval: str) -> Answer:
        """OHLCV rows from ``start`` to ``end`` (both included)."""
        ticker = ticker.upper()
        folder = self.cache_dir / "history" / _safe(ticker) / interval
        path = folder / f"{start.isoformat()}_{end.isoformat()}.parquet"
        failure = None
        if not self.offline:
            try:
                frame = self.yahoo.ticker(ticker).history(
                    start=start.isoformat(),
                    end=(end + dt.timedelta(days=1)).isoformat(),
                    interval=interval,
                    auto_adjust=False,
                    actions=False,
                    raise_errors=True,
                )
            except Exception as e:
                if self.yahoo.is_data_error(e):
                    raise MarketDataError(
                        f"Yahoo Finance has no {interval} prices for {ticker}: {e}"
                    ) from None
                failure = f"{type(e).__name__}: {e}"
            else:
                if len(frame):
                    _write_parquet(frame, path)
                    return Answer(frame, LIVE_SOURCE)
                failure = "Yahoo Finance returned no rows"
        cached = self._cached_history(folder, start, end)
        if cached is not None:
            return cached
        if ticker in SAMPLE_TICKERS:
            return _sample_history(ticker, start, end, interval)
        raise MarketDataError(
            f"no {interval} prices for {ticker} from {start} to {end}: "
            + (f"the live fetch failed ({failure}); " if failure else "offline; ")
            + "nothing in the cache; the offline sample data has monthly closes of "
            + ", ".join(SAMPLE_TICKERS)
            + " from 2000-01 to 2010-03"
        )

    def _cached_history(self, folder: Path, start: dt.date, end: dt.date) -> Answer | None:
        """A cached fetch whose range covers the request, cut to it."""
        if not folder.is_dir():
            return None
        for path in sorted(folder.glob("*.parquet")):
            try:
                first, last = (dt.date.fromisoformat(p) for p in path.stem.split("_"))
            except ValueError:
                continue
            if first <= start and end <= last:
                frame = pd.read_parquet(path)
                dates = _local_dates(frame.index)
                frame = frame[(dates >= start) & (dates <= end)]
                return Answer(frame, _cache_source(path))
        return None

    # -- statements, dividends, company info --------------------------------------------------

    def statement(self, ticker: str, statement: str, period: str) -> Answer:
        """A financial statement: line items as rows, one column per period end."""
        ticker = ticker.upper()
        path = self.cache_dir / "statements" / _safe(ticker) / f"{statement}_{period}.parquet"
        getter = {
            "income": "get_income_stmt",
            "balance": "get_balance_sheet",
            "cashflow": "get_cash_flow",
        }[statement]
        freq = "yearly" if period == "annual" else "quarterly"

        def fetch() -> pd.DataFrame:
            return getattr(self.yahoo.ticker(ticker), getter)(freq=freq)

        frame, source, failure = self._fetch_or_cache(fetch, path, _read_frame, _write_parquet)
        if frame is None:
            raise _unavailable(
                f"{period} {statement} statement for {ticker}",
                failure,
                "; the offline sample data has prices only",
            )
        return Answer(frame, source)

    def dividends(self, ticker: str) -> Answer:
        """Dividends per share by ex-dividend date (the whole history)."""
        ticker = ticker.upper()
        path = self.cache_dir / "dividends" / f"{_safe(ticker)}.parquet"

        def fetch() -> pd.DataFrame:
            return self.yahoo.ticker(ticker).get_dividends(period="max").to_frame("Dividends")

        frame, source, failure = self._fetch_or_cache(fetch, path, _read_frame, _write_parquet)
        if frame is None:
            raise _unavailable(f"dividend data for {ticker}", failure)
        return Answer(frame["Dividends"], source)

    def info(self, ticker: str) -> Answer:
        """Yahoo's company profile (a dict)."""
        ticker = ticker.upper()
        path = self.cache_dir / "info" / f"{_safe(ticker)}.json"

        def fetch() -> dict[str, Any]:
            info = self.yahoo.ticker(ticker).get_info()
            if not info or len(info) <= 1:
                raise MarketDataError(f"Yahoo Finance has no company profile for {ticker}")
            return dict(info)

        info, source, failure = self._fetch_or_cache(fetch, path, _read_json, _write_json)
        if info is None:
            raise _unavailable(f"company profile for {ticker}", failure)
        return Answer(info, source)

    def _fetch_or_cache(
        self, fetch: Any, path: Path, read: Any, write: Any
    ) -> tuple[Any, str, str]:
        failure = ""
        if not self.offline:
            try:
                value = fetch()
            except MarketDataError:
                raise
            except Exception as e:
                if self.yahoo.is_data_error(e):
                    raise MarketDataError(f"Yahoo Finance: {e}") from None
                failure = f"{type(e).__name__}: {e}"
            else:
                if len(value):
                    write(value, path)
                    return value, LIVE_SOURCE, ""
                failure = "Yahoo Finance returned nothing"
        if path.is_file():
            return read(path), _cache_source(path), failure
        return None, "", failure


# -- the sample data --------------------------------------------------------------------------


def sample_prices() -> pd.DataFrame:
    """vega-datasets' ``stocks.csv`` as read from the installed package (no network)."""
    try:
        from importlib.resources import files

        csv = files("vega_datasets") / "_data" / "stocks.csv"
        text = csv.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise MarketDataError(
            "the offline sample data needs the vega-datasets package: "
            'pip install "kernel-bridge[tools]"'
        ) from e
    from io import StringIO

    frame = pd.read_csv(StringIO(text))
    frame["date"] = pd.to_datetime(frame["date"], format="%b %d %Y")
    return frame


def _sample_history(ticker: str, start: dt.date, end: dt.date, interval: str) -> Answer:
    frame = sample_prices()
    frame = frame[frame["symbol"] == ticker].set_index("date")[["price"]]
    frame = frame.rename(columns={"price": "Close"}).rename_axis("Date")
    month_end = frame.index + pd.offsets.MonthBegin(1)
    keep = (month_end > pd.Timestamp(start)) & (frame.index <= pd.Timestamp(end))
    notes = ["monthly closing prices only (no open, high, low or volume)"]
    if interval != "1mo":
        notes[0] = f"asked for interval {interval!r}; the sample has " + notes[0]
    answer = Answer(frame[keep], SAMPLE_SOURCE, notes, interval="1mo")
    if not len(answer.data):
        raise MarketDataError(
            f"no prices for {ticker} from {start} to {end}: offline, and the sample data covers "
            "2000-01 to 2010-03 only"
        )
    return answer


# -- helpers ----------------------------------------------------------------------------------


def _unavailable(what: str, failure: str, more: str = "") -> MarketDataError:
    why = f"the live fetch failed ({failure})" if failure else "offline"
    return MarketDataError(f"no {what}: {why} and nothing is cached{more}")


def _safe(ticker: str) -> str:
    return "".join(c if c.isalnum() or c in "-._^=" else "_" for c in ticker)


def _local_dates(index: pd.Index) -> Any:
    """The calendar date of each timestamp in its own (exchange) time zone."""
    return pd.DatetimeIndex(index).date


def _cache_source(path: Path) -> str:
    fetched = dt.datetime.fromtimestamp(path.stat().st_mtime).date().isoformat()
    return f"cache: Yahoo Finance data fetched on {fetched} ({path})"


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]  # parquet needs string column names
    frame.to_parquet(tmp)
    os.replace(tmp, path)


def _read_frame(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    with contextlib.suppress(ValueError, TypeError):
        frame.columns = pd.to_datetime(frame.columns)  # statements: one column per period end
    return frame


def _write_json(value: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
