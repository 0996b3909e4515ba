"""RFC 3339 times at the wire, epoch seconds inside.

Every event carries a time, so both directions run once per message and are
kept cheap. Parsing checks the common shape (``2026-11-29T01:02:03.456Z``) by
position and lets the C ``datetime.fromisoformat`` do the digits; anything
else (other offsets, other fraction lengths, leap seconds, lower-case ``t``
or ``z``) goes through a strict RFC 3339 regular expression and arithmetic.
``fromisoformat`` alone is not enough: it accepts dates without times,
basic-format times and missing offsets, none of which RFC 3339 allows.

Formatting always writes UTC with millisecond precision and ``Z``, so
``format_ts(parse_ts(x)) == x`` for every such ``x``. A parsed time is the
correctly rounded float of the exact instant, so the round trip is exact.

>>> parse_ts("1970-01-02T00:00:00.500Z")
86400.5
>>> format_ts(parse_ts("2026-11-29T03:02:03.456+02:00"))
'2026-11-29T01:02:03.456Z'
"""

from __future__ import annotations

import datetime as _dt
import math
import re

__all__ = ["format_ts", "parse_ts"]

_EPOCH = _dt.datetime(1970, 1, 1)
_MS = _dt.timedelta(milliseconds=1)
_fromisoformat = _dt.datetime.fromisoformat

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _show(s: object) -> str:
    text = repr(s)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_general(s: str) -> float:
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise ValueError(f"not an RFC 3339 time (e.g. 2026-11-29T01:02:03.456Z): {_show(s)}")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} out of range in time {_show(s)}")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    last = 29 if month == 2 and leap else _MONTH_DAYS[month - 1]
    if not 1 <= day <= last:
        raise ValueError(f"day {day} out of range for month {month} in time {_show(s)}")
    if hour > 23 or minute > 59 or second > 60:   # 60: a leap second, as RFC 3339 allows
        raise ValueError(f"time of day out of range in time {_show(s)}")
    offset = 0
    if m[8] is None:
        oh, om = int(m[10]), int(m[11])
        if oh > 23 or om > 59:
            raise ValueError(f"UTC offset out of range in time {_show(s)}")
        offset = (oh * 3600 + om * 60) * (1 if m[9] == "+" else -1)
    whole = (_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
             - offset)
    frac = m[7]
    if frac is None:
        return float(whole)
    # whole and fraction as one exact rational, so the float is correctly rounded
    scale = 10 ** len(frac)
    return (whole * scale + int(frac)) / scale


def parse_ts(s: str) -> float:
    """An RFC 3339 time (any offset) as float seconds since the Unix epoch.

    Raises ``ValueError`` with a message that quotes (a prefix of) the input.
    """
    n = len(s)
    # s[4:17:3]: the separators at 4, 7, 10, 13 and 16 ("-", "-", "T", ":", ":"), one slice
    if ((n == 24 and s[19] == "." and s[23] == "Z") or (n == 20 and s[19] == "Z")) and (
            s[4:17:3] == "--T::" and s.isascii()):
        try:
            return _fromisoformat(s).timestamp()
        except ValueError:
            pass  # a leap second, or not a time at all: the general path says which
    return _parse_general(s)


def format_ts(t: float) -> str:
    """``t`` (epoch seconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``, rounded to the millisecond."""
    try:
        when = _EPOCH + math.floor(t * 1000.0 + 0.5) * _MS
    except (OverflowError, ValueError):
        raise ValueError(f"time {t!r} cannot be written as an RFC 3339 time") from None
    return f"{when.isoformat(timespec='milliseconds')}Z"


def parse_ts_or_none(value: object) -> float | None:
    """``parse_ts`` for tools reading arbitrary JSON: None for a missing or unreadable time."""
    if not isinstance(value, str):
        return None
    try:
        return parse_ts(value)
    except ValueError:
        return None
