"""Finance tools on Yahoo Finance (yfinance), each with a strict ``cutoff_date``.

``cutoff_date`` D means "as known at the end of day D in the exchange's time zone". Every row
that holds information from after that moment is removed from every answer, whatever range was
asked for:

- price bars are kept only when the whole bar has ended by then (a monthly bar labelled on the
  1st needs the month to be over; an intraday bar must end by midnight after D, local time);
- statement columns only when the statement would have been filed: the period end plus 45 days
  (quarterly) or 90 days (annual), the SEC's longest filing deadlines;
- dividends by ex-dividend date;
- company info keeps only descriptive fields that do not move with time (name, sector, ...).

With a cutoff, ``toolset("finance", cutoff=...)`` also blocks model code from importing yfinance
or its HTTP layer and from looking up Yahoo's hosts (``kernel_bridge.tools.guard``).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import numpy as np
import pandas as pd

from kernel_bridge.tools.base import Tool, ToolError
from kernel_bridge.tools.guard import HostGuard
from kernel_bridge.tools.market import (
    INTERVALS,
    PERIODS,
    STATEMENTS,
    MarketData,
    MarketDataError,
)

YAHOO_HOSTS = ("yahoo.com", "yahooapis.com", "yimg.com")
BLOCKED_MODULES = ("yfinance", "curl_cffi")
FILING_LAG_DAYS = {"quarterly": 45, "annual": 90}
STATIC_INFO_KEYS = (
    "symbol",
    "shortName",
    "longName",
    "quoteType",
    "exchange",
    "fullExchangeName",
    "currency",
    "sector",
    "industry",
    "country",
    "city",
    "state",
    "website",
)
_INTRADAY = {"m", "h"}


def parse_date(value: Any, what: str) -> dt.date:
    """A ``YYYY-MM-DD`` string, date or datetime as a date; anything else is a clear error."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise ToolError(f"{what} must be a date like '2008-06-30', got {value!r}")


def bar_end(index: pd.DatetimeIndex, interval: str) -> pd.DatetimeIndex:
    """When each bar ends: its label plus its length.

    Days, weeks and months are calendar lengths in the index's own time zone, so a daily bar ends
    at the next local midnight also across a daylight-saving change.
    """
    if interval.endswith("mo"):
        return _local_shift(index, pd.DateOffset(months=int(interval[:-2])))
    if interval.endswith("wk"):
        return _local_shift(index, pd.DateOffset(weeks=int(interval[:-2])))
    if interval.endswith("d"):
        return _local_shift(index, pd.DateOffset(days=int(interval[:-1])))
    if interval.endswith("h"):
        return index + pd.Timedelta(hours=int(interval[:-1]))
    return index + pd.Timedelta(minutes=int(interval[:-1]))


def _local_shift(index: pd.DatetimeIndex, offset: pd.DateOffset) -> pd.DatetimeIndex:
    """``index + offset`` in local wall time, resolved as ``end_of_day`` resolves midnight: a wall
    time that a daylight-saving change skips becomes the first instant after the gap; one it
    repeats, the first of the two (a daily bar ends where the next day begins)."""
    if index.tz is None:
        return index + offset
    wall = index.tz_localize(None) + offset
    first = np.ones(len(wall), dtype=bool)  # True: the daylight-saving (first) occurrence
    return wall.tz_localize(index.tz, ambiguous=first, nonexistent="shift_forward")


def end_of_day(index: pd.DatetimeIndex, day: dt.date) -> pd.Timestamp:
    """Midnight after ``day`` in the index's own time zone (naive when the index is naive).

    Where a daylight-saving change skips that midnight, the next day begins at the first instant
    after the gap; where it repeats it, at the first of the two.
    """
    boundary = pd.Timestamp(day + dt.timedelta(days=1))
    if index.tz is None:
        return boundary
    return boundary.tz_localize(index.tz, ambiguous=True, nonexistent="shift_forward")


def bars_until(frame: pd.DataFrame, cutoff: dt.date, interval: str) -> pd.DataFrame:
    """The bars of ``frame`` that have ended by the end of ``cutoff`` (exchange time)."""
    index = pd.DatetimeIndex(frame.index)
    return frame[bar_end(index, interval) <= end_of_day(index, cutoff)]


def _intraday(interval: str) -> bool:
    return interval[-1] in _INTRADAY


class FinanceTool(Tool):
    """What the finance tools share: the cutoff, the data source, and a note of where data came
    from (printed with every answer, so the model reads it in the output)."""

    def __init__(
        self,
        cutoff_date: str | dt.date | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        market: MarketData | None = None,
    ) -> None:
        self.cutoff_date = None if cutoff_date is None else parse_date(cutoff_date, "cutoff_date")
        self.market = market or MarketData(cache_dir=cache_dir, offline=offline)

    def _fetch(self, method: str, *args: Any) -> Any:
        try:
            with HostGuard.allowed():
                answer = getattr(self.market, method)(*args)
        except MarketDataError as e:
            raise ToolError(f"{self.name}: {e}") from None
        return answer

    def _say(self, answer: Any, what: str, removed: int = 0) -> None:
        parts = [f"[{self.name}] {what} from {answer.source}"]
        parts += answer.notes
        if self.cutoff_date is not None:
            parts.append(
                f"cutoff {self.cutoff_date}: "
                + (f"{removed} later row(s) removed" if removed else "nothing after it")
            )
        print("; ".join(parts))


class StockPrice(FinanceTool):
    name = "stock_price"
    description = (
        "Prices of a stock (Open, High, Low, Close, Adj Close, Volume) as a pandas DataFrame "
        "indexed by date, from start to end (both included). interval is one of 1m, 5m, 15m, "
        "30m, 1h, 1d, 1wk, 1mo. Rows after the session's cutoff date are never returned."
    )
    inputs = {  # noqa: RUF012
        "ticker": {"type": "string", "description": "Ticker symbol, e.g. 'AAPL'."},
        "start": {"type": "string", "description": "First date, 'YYYY-MM-DD'."},
        "end": {"type": "string", "description": "Last date, 'YYYY-MM-DD' (included)."},
        "interval": {"type": "string", "description": "Bar length.", "nullable": True},
    }
    output_type = "object"
    returns = "pandas.DataFrame"

    def forward(self, ticker: str, start: str, end: str, interval: str = "1d") -> pd.DataFrame:
        if interval not in INTERVALS:
            raise ToolError(f"stock_price: interval must be one of {', '.join(INTERVALS)}")
        first, last = parse_date(start, "start"), parse_date(end, "end")
        if self.cutoff_date is not None:
            last = min(last, self.cutoff_date)  # never even ask for later data
        if first > last:
            raise ToolError(
                f"stock_price: start {first} is after end {last}"
                + (f" (the cutoff is {self.cutoff_date})" if self.cutoff_date else "")
            )
        answer = self._fetch("history", str(ticker), first, last, interval)
        frame = answer.data
        removed = 0
        if self.cutoff_date is not None:
            # The sample data is monthly whatever was asked: judge bars by their real length.
            kept = bars_until(frame, self.cutoff_date, answer.interval or interval)
            removed, frame = len(frame) - len(kept), kept
        self._say(answer, f"{len(frame)} row(s) of {ticker.upper()}", removed)
        return frame


class CompanyFinancials(FinanceTool):
    name = "company_financials"
    description = (
        "A financial statement of a company as a pandas DataFrame: line items as rows, one "
        "column per period end. statement is 'income', 'balance' or 'cashflow'; period is "
        "'annual' or 'quarterly'. Only statements filed by the session's cutoff date are "
        "returned (period end + 45 days quarterly, + 90 days annual)."
    )
    inputs = {  # noqa: RUF012
        "ticker": {"type": "string", "description": "Ticker symbol, e.g. 'MSFT'."},
        "statement": {"type": "string", "description": "'income', 'balance' or 'cashflow'."},
        "period": {"type": "string", "description": "'annual' or 'quarterly'.", "nullable": True},
    }
    output_type = "object"
    returns = "pandas.DataFrame"

    def forward(self, ticker: str, statement: str, period: str = "annual") -> pd.DataFrame:
        if statement not in STATEMENTS:
            raise ToolError(f"company_financials: statement must be one of {STATEMENTS}")
        if period not in PERIODS:
            raise ToolError(f"company_financials: period must be one of {PERIODS}")
        answer = self._fetch("statement", str(ticker), statement, period)
        frame = answer.data
        removed = 0
        if self.cutoff_date is not None:
            ends = pd.to_datetime(pd.Index(frame.columns))
            filed = ends + pd.Timedelta(days=FILING_LAG_DAYS[period])
            keep = filed.date <= self.cutoff_date
            removed, frame = int((~keep).sum()), frame.loc[:, keep]
        self._say(answer, f"{period} {statement} statement of {ticker.upper()}", removed)
        return frame


class CompanyInfo(FinanceTool):
    name = "company_info"
    description = (
        "Profile of a company as a dict (name, sector, industry, country, website, ...). With a "
        "cutoff date only fields that do not change over time are returned."
    )
    inputs = {"ticker": {"type": "string", "description": "Ticker symbol."}}  # noqa: RUF012
    output_type = "object"

    def forward(self, ticker: str) -> dict[str, Any]:
        answer = self._fetch("info", str(ticker))
        info = dict(answer.data)
        removed = 0
        if self.cutoff_date is not None:
            kept = {k: info[k] for k in STATIC_INFO_KEYS if k in info}
            removed, info = len(info) - len(kept), kept
        self._say(answer, f"profile of {ticker.upper()}", removed)
        return info


class Dividends(FinanceTool):
    name = "dividends"
    description = (
        "Dividends per share of a stock as a pandas Series indexed by ex-dividend date, from "
        "start to end (both included); none after the session's cutoff date."
    )
    inputs = {  # noqa: RUF012
        "ticker": {"type": "string", "description": "Ticker symbol."},
        "start": {"type": "string", "description": "First date, 'YYYY-MM-DD'.", "nullable": True},
        "end": {"type": "string", "description": "Last date, 'YYYY-MM-DD'.", "nullable": True},
    }
    output_type = "object"
    returns = "pandas.Series"

    def forward(self, ticker: str, start: str | None = None, end: str | None = None) -> pd.Series:
        answer = self._fetch("dividends", str(ticker))
        series = answer.data
        dates = pd.DatetimeIndex(series.index).date
        if start is not None:
            series = series[dates >= parse_date(start, "start")]
            dates = pd.DatetimeIndex(series.index).date
        if end is not None:
            series = series[dates <= parse_date(end, "end")]
        removed = 0
        if self.cutoff_date is not None:
            later = pd.DatetimeIndex(series.index).date > self.cutoff_date
            removed, series = int(later.sum()), series[~later]
        self._say(answer, f"{len(series)} dividend(s) of {ticker.upper()}", removed)
        return series


FINANCE_TOOLS = (StockPrice, CompanyFinancials, CompanyInfo, Dividends)


def finance_tools(cutoff: str | dt.date | None = None, **options: Any) -> list[FinanceTool]:
    """One of each finance tool sharing ``cutoff`` and the data options (cache_dir, offline)."""
    market = options.pop("market", None) or MarketData(**options)
    return [cls(cutoff_date=cutoff, market=market) for cls in FINANCE_TOOLS]
