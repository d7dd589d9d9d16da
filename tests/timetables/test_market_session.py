"""MarketSessionTimetable against the NYSE's published calendar (every instant written out literally).

NYSE facts used (UTC): regular sessions 09:30-16:00 New York = 13:30-20:00 UTC in summer (EDT) and
14:30-21:00 UTC in winter (EST); DST began 2024-03-10; early closes at 13:00 New York on 2024-07-03
(17:00 UTC), 2024-11-29 and 2024-12-24 (18:00 UTC); closed 2024-07-04, 2024-12-25, 2025-01-01 and
2025-01-09 (national day of mourning for President Carter).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
import time_machine
from airflow.timetables.base import DataInterval, TimeRestriction

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.plugins import PortfolioPlugin
from airflow_provider_portfolio.timetables import MarketSessionTimetable

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["pandas", "numpy", "pandas_market_calendars"]
QUALNAME = "airflow_provider_portfolio.timetables.market_session.MarketSessionTimetable"


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def catchup_from(earliest, latest=None) -> TimeRestriction:
    return TimeRestriction(earliest=earliest, latest=latest, catchup=True)


def runs(timetable, restriction, *, until) -> list[tuple[pendulum.DateTime, pendulum.DateTime, pendulum.DateTime]]:
    """(start, end, run_after) of the automated runs whose run_after is at or before ``until``."""
    out, last = [], None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.run_after > until:
            return out
        out.append((info.data_interval.start, info.data_interval.end, info.run_after))
        last = info.data_interval


def first_run(timetable, restriction, last=None):
    info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
    return None if info is None else (info.data_interval.start, info.data_interval.end, info.run_after)


# -- every N minutes ------------------------------------------------------------------------------


def test_every_30_minutes_across_a_week_with_a_holiday_and_an_early_close():
    timetable = MarketSessionTimetable("XNYS", every=30)
    got = runs(timetable, catchup_from(utc(2024, 7, 1, 4, 0)), until=utc(2024, 7, 6))
    by_day: dict[str, list] = {}
    for start, end, run_after in got:
        assert run_after == end
        by_day.setdefault(start.to_date_string(), []).append((start, end))
    # Thursday 2024-07-04 is a holiday; the rest have 13 bars, the early close 7.
    assert {day: len(bars) for day, bars in by_day.items()} == {
        "2024-07-01": 13, "2024-07-02": 13, "2024-07-03": 7, "2024-07-05": 13,
    }
    assert by_day["2024-07-01"][0] == (utc(2024, 7, 1, 13, 30), utc(2024, 7, 1, 14, 0))
    assert by_day["2024-07-01"][-1] == (utc(2024, 7, 1, 19, 30), utc(2024, 7, 1, 20, 0))
    assert by_day["2024-07-03"] == [
        (utc(2024, 7, 3, 13, 30), utc(2024, 7, 3, 14, 0)),
        (utc(2024, 7, 3, 14, 0), utc(2024, 7, 3, 14, 30)),
        (utc(2024, 7, 3, 14, 30), utc(2024, 7, 3, 15, 0)),
        (utc(2024, 7, 3, 15, 0), utc(2024, 7, 3, 15, 30)),
        (utc(2024, 7, 3, 15, 30), utc(2024, 7, 3, 16, 0)),
        (utc(2024, 7, 3, 16, 0), utc(2024, 7, 3, 16, 30)),
        (utc(2024, 7, 3, 16, 30), utc(2024, 7, 3, 17, 0)),
    ]
    assert by_day["2024-07-05"][-1] == (utc(2024, 7, 5, 19, 30), utc(2024, 7, 5, 20, 0))


def test_after_the_early_close_the_next_bar_is_the_next_session_open():
    timetable = MarketSessionTimetable("XNYS", every=30)
    last = DataInterval(utc(2024, 7, 3, 16, 30), utc(2024, 7, 3, 17, 0))
    assert first_run(timetable, catchup_from(utc(2024, 1, 2)), last) == (
        utc(2024, 7, 5, 13, 30), utc(2024, 7, 5, 14, 0), utc(2024, 7, 5, 14, 0)
    )


def test_last_bar_is_cut_at_the_close_and_offsets_shape_the_window():
    # 45-minute bars from 09:35 to 15:45 New York on 2024-07-01 (13:35-19:45 UTC): the 9th bar is cut.
    timetable = MarketSessionTimetable("XNYS", every=timedelta(minutes=45), open_offset=5, close_offset=15)
    got = runs(timetable, catchup_from(utc(2024, 7, 1)), until=utc(2024, 7, 1, 23, 0))
    assert len(got) == 9
    assert got[0] == (utc(2024, 7, 1, 13, 35), utc(2024, 7, 1, 14, 20), utc(2024, 7, 1, 14, 20))
    assert got[-1] == (utc(2024, 7, 1, 19, 35), utc(2024, 7, 1, 19, 45), utc(2024, 7, 1, 19, 45))


def test_dst_change_moves_the_utc_open():
    timetable = MarketSessionTimetable("XNYS", every=60)
    got = runs(timetable, catchup_from(utc(2024, 3, 8)), until=utc(2024, 3, 11, 15, 0))
    assert got[0] == (utc(2024, 3, 8, 14, 30), utc(2024, 3, 8, 15, 30), utc(2024, 3, 8, 15, 30))
    assert got[6] == (utc(2024, 3, 8, 20, 30), utc(2024, 3, 8, 21, 0), utc(2024, 3, 8, 21, 0))
    assert got[7:] == [(utc(2024, 3, 11, 13, 30), utc(2024, 3, 11, 14, 30), utc(2024, 3, 11, 14, 30))]


def test_no_runs_on_christmas_or_the_weekend():
    timetable = MarketSessionTimetable("XNYS", every=60)
    last = DataInterval(utc(2024, 12, 24, 17, 30), utc(2024, 12, 24, 18, 0))  # Christmas Eve closes 13:00 NY
    assert first_run(timetable, catchup_from(None), last)[:2] == (utc(2024, 12, 26, 14, 30), utc(2024, 12, 26, 15, 30))
    friday_last = DataInterval(utc(2024, 12, 27, 20, 30), utc(2024, 12, 27, 21, 0))
    assert first_run(timetable, catchup_from(None), friday_last)[:2] == (
        utc(2024, 12, 30, 14, 30), utc(2024, 12, 30, 15, 30)
    )


def test_one_off_closure_2025_01_09_and_the_year_boundary():
    timetable = MarketSessionTimetable("XNYS", every=30)
    new_year = DataInterval(utc(2024, 12, 31, 20, 30), utc(2024, 12, 31, 21, 0))
    assert first_run(timetable, catchup_from(None), new_year) == (
        utc(2025, 1, 2, 14, 30), utc(2025, 1, 2, 15, 0), utc(2025, 1, 2, 15, 0)
    )
    mourning = DataInterval(utc(2025, 1, 8, 20, 30), utc(2025, 1, 8, 21, 0))
    assert first_run(timetable, catchup_from(None), mourning)[0] == utc(2025, 1, 10, 14, 30)
    opens = runs(MarketSessionTimetable(at="open"), catchup_from(utc(2024, 12, 30)), until=utc(2025, 1, 13))
    assert [r[2] for r in opens] == [
        utc(2024, 12, 30, 14, 30), utc(2024, 12, 31, 14, 30), utc(2025, 1, 2, 14, 30), utc(2025, 1, 3, 14, 30),
        utc(2025, 1, 6, 14, 30), utc(2025, 1, 7, 14, 30), utc(2025, 1, 8, 14, 30), utc(2025, 1, 10, 14, 30),
    ]


# -- at open / at close ---------------------------------------------------------------------------


def test_at_open_is_an_exact_interval_at_the_open():
    got = runs(MarketSessionTimetable("XNYS", at="open"), catchup_from(utc(2024, 7, 1)), until=utc(2024, 7, 6))
    assert got == [(t, t, t) for t in (
        utc(2024, 7, 1, 13, 30), utc(2024, 7, 2, 13, 30), utc(2024, 7, 3, 13, 30), utc(2024, 7, 5, 13, 30),
    )]
    late = MarketSessionTimetable("XNYS", at="open", open_offset=timedelta(minutes=5))
    assert first_run(late, catchup_from(utc(2024, 3, 11))) == (
        utc(2024, 3, 11, 13, 35), utc(2024, 3, 11, 13, 35), utc(2024, 3, 11, 13, 35)
    )


def test_at_close_with_before_close_covers_the_session_and_runs_before_the_close():
    timetable = MarketSessionTimetable("XNYS", at="close", close_offset=15)
    got = runs(timetable, catchup_from(utc(2024, 11, 27)), until=utc(2024, 12, 3))
    assert got == [
        (utc(2024, 11, 27, 14, 30), utc(2024, 11, 27, 20, 45), utc(2024, 11, 27, 20, 45)),
        # Thanksgiving 2024-11-28 closed; 2024-11-29 closes at 13:00 New York = 18:00 UTC.
        (utc(2024, 11, 29, 14, 30), utc(2024, 11, 29, 17, 45), utc(2024, 11, 29, 17, 45)),
        (utc(2024, 12, 2, 14, 30), utc(2024, 12, 2, 20, 45), utc(2024, 12, 2, 20, 45)),
    ]


def test_crypto_24_7_runs_every_day():
    got = runs(MarketSessionTimetable("24/7", every=360), catchup_from(utc(2024, 7, 6)), until=utc(2024, 7, 7, 6, 0))
    assert [r[0] for r in got] == [
        utc(2024, 7, 6, 0), utc(2024, 7, 6, 6), utc(2024, 7, 6, 12), utc(2024, 7, 6, 18), utc(2024, 7, 7, 0),
    ]
    opens = runs(MarketSessionTimetable("24/7", at="open"), catchup_from(utc(2024, 7, 6)), until=utc(2024, 7, 8))
    assert [r[2] for r in opens] == [utc(2024, 7, 6), utc(2024, 7, 7), utc(2024, 7, 8)]


# -- restriction: catchup, latest ------------------------------------------------------------------


@time_machine.travel("2024-07-03T15:10:00Z", tick=False)
def test_catchup_false_starts_from_the_latest_finished_bar():
    timetable = MarketSessionTimetable("XNYS", every=30)
    no_catchup = TimeRestriction(earliest=utc(2024, 1, 2), latest=None, catchup=False)
    assert first_run(timetable, no_catchup) == (utc(2024, 7, 3, 14, 30), utc(2024, 7, 3, 15, 0), utc(2024, 7, 3, 15, 0))
    # After that run, the next bar is the one in progress (it runs when it ends, 15:30).
    assert first_run(timetable, no_catchup, DataInterval(utc(2024, 7, 3, 14, 30), utc(2024, 7, 3, 15, 0))) == (
        utc(2024, 7, 3, 15, 0), utc(2024, 7, 3, 15, 30), utc(2024, 7, 3, 15, 30)
    )
    # An old last run is not caught up.
    assert first_run(timetable, no_catchup, DataInterval(utc(2024, 6, 3, 13, 30), utc(2024, 6, 3, 14, 0)))[0] == utc(
        2024, 7, 3, 14, 30
    )
    # A start date in the future wins.
    future = TimeRestriction(earliest=utc(2024, 7, 5), latest=None, catchup=False)
    assert first_run(timetable, future)[0] == utc(2024, 7, 5, 13, 30)
    # With catchup, the start date decides.
    assert first_run(timetable, catchup_from(utc(2024, 1, 2)))[0] == utc(2024, 1, 2, 14, 30)


@time_machine.travel("2024-07-06T12:00:00Z", tick=False)  # Saturday
def test_catchup_false_on_a_weekend():
    no_catchup = TimeRestriction(earliest=utc(2024, 1, 2), latest=None, catchup=False)
    assert first_run(MarketSessionTimetable("XNYS", every=30), no_catchup)[:2] == (
        utc(2024, 7, 5, 19, 30), utc(2024, 7, 5, 20, 0)
    )
    assert first_run(MarketSessionTimetable("XNYS", at="open"), no_catchup)[0] == utc(2024, 7, 5, 13, 30)
    last_open = DataInterval(utc(2024, 7, 5, 13, 30), utc(2024, 7, 5, 13, 30))
    assert first_run(MarketSessionTimetable("XNYS", at="open"), no_catchup, last_open)[0] == utc(2024, 7, 8, 13, 30)


def test_latest_restriction_ends_the_schedule():
    timetable = MarketSessionTimetable("XNYS", every=30)
    until = catchup_from(utc(2024, 7, 3), latest=utc(2024, 7, 3, 16, 30))
    last = DataInterval(utc(2024, 7, 3, 16, 0), utc(2024, 7, 3, 16, 30))
    assert first_run(timetable, until, last)[0] == utc(2024, 7, 3, 16, 30)  # latest is inclusive
    assert first_run(timetable, until, DataInterval(utc(2024, 7, 3, 16, 30), utc(2024, 7, 3, 17, 0))) is None


# -- manual runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "run_after", "expected"),
    [
        ({"every": 30}, utc(2024, 7, 3, 15, 10), (utc(2024, 7, 3, 15, 0), utc(2024, 7, 3, 15, 30))),
        ({"every": 30}, utc(2024, 7, 3, 15, 0), (utc(2024, 7, 3, 15, 0), utc(2024, 7, 3, 15, 30))),
        ({"every": 30}, utc(2024, 7, 4, 12, 0), (utc(2024, 7, 3, 16, 30), utc(2024, 7, 3, 17, 0))),
        ({"every": 30}, utc(2024, 7, 8, 13, 0), (utc(2024, 7, 5, 19, 30), utc(2024, 7, 5, 20, 0))),
        ({"at": "open"}, utc(2024, 7, 4, 12, 0), (utc(2024, 7, 3, 13, 30), utc(2024, 7, 3, 13, 30))),
        ({"at": "close"}, utc(2024, 7, 3, 15, 0), (utc(2024, 7, 3, 13, 30), utc(2024, 7, 3, 17, 0))),
        ({"at": "close", "close_offset": 15}, utc(2024, 11, 29, 20, 0),
         (utc(2024, 11, 29, 14, 30), utc(2024, 11, 29, 17, 45))),
    ],
)
def test_infer_manual_data_interval(kwargs, run_after, expected):
    interval = MarketSessionTimetable("XNYS", **kwargs).infer_manual_data_interval(run_after=run_after)
    assert (interval.start, interval.end) == expected


# -- serialization, text, validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "timetable",
    [
        MarketSessionTimetable("XNYS", every=5),
        MarketSessionTimetable("XLON", every=timedelta(hours=1), open_offset=timedelta(seconds=90), close_offset=15),
        MarketSessionTimetable("XNYS", at="open", open_offset=5),
        MarketSessionTimetable("24/7", at="close", close_offset=timedelta(minutes=30)),
    ],
)
def test_serialize_round_trip(timetable):
    data = json.loads(json.dumps(timetable.serialize()))
    again = MarketSessionTimetable.deserialize(data)
    assert again == timetable and again.serialize() == data
    assert again.summary == timetable.summary and again.description == timetable.description


def test_serialized_form():
    assert MarketSessionTimetable("XNYS", every=5, close_offset=15).serialize() == {
        "exchange": "XNYS", "every_minutes": 5, "at": None, "open_offset_seconds": 0, "close_offset_seconds": 900,
    }


# -- the old offset names: after_open / before_close ------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"every": 45, "after_open": 5, "before_close": 15}, {"every": 45, "open_offset": 5, "close_offset": 15}),
        ({"at": "open", "after_open": timedelta(minutes=5)}, {"at": "open", "open_offset": timedelta(minutes=5)}),
        ({"at": "close", "before_close": 15}, {"at": "close", "close_offset": 15}),
    ],
)
def test_old_offset_names_give_the_same_schedule(old, new):
    with pytest.warns(DeprecationWarning, match=r"use (open|close)_offset="):
        aliased = MarketSessionTimetable("XNYS", **old)
    current = MarketSessionTimetable("XNYS", **new)
    restriction = catchup_from(utc(2024, 11, 26))  # Thanksgiving week: a holiday and an early close
    got = runs(aliased, restriction, until=utc(2024, 12, 3))
    assert got == runs(current, restriction, until=utc(2024, 12, 3)) and len(got) >= 4
    assert aliased == current and aliased.serialize() == current.serialize()
    assert (aliased.after_open, aliased.before_close) == (current.open_offset, current.close_offset)
    assert aliased.summary == current.summary


def test_new_names_do_not_warn(recwarn):
    MarketSessionTimetable("XNYS", every=5, open_offset=5, close_offset=15)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_both_spellings_of_one_offset_are_refused():
    with pytest.raises(InvalidInputError, match="not both") as caught:
        MarketSessionTimetable("XNYS", every=5, open_offset=5, after_open=5)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidInputError, match="give close_offset= or its deprecated alias before_close=, not both"):
        MarketSessionTimetable("XNYS", at="close", close_offset=timedelta(0), before_close=15)
    # One offset under each spelling is fine.
    with pytest.warns(DeprecationWarning):
        mixed = MarketSessionTimetable("XNYS", every=5, open_offset=5, before_close=15)
    assert (mixed.open_offset, mixed.close_offset) == (timedelta(minutes=5), timedelta(minutes=15))


def test_old_serialized_form_still_deserializes():
    old = {"exchange": "XNYS", "every_minutes": 5, "at": None, "before_close_seconds": 900, "after_open_seconds": 300}
    restored = MarketSessionTimetable.deserialize(json.loads(json.dumps(old)))
    assert restored == MarketSessionTimetable("XNYS", every=5, open_offset=5, close_offset=15)
    assert restored.serialize() == {"exchange": "XNYS", "every_minutes": 5, "at": None,
                                    "open_offset_seconds": 300, "close_offset_seconds": 900}
    at_close = MarketSessionTimetable.deserialize({"exchange": "XNYS", "at": "close", "before_close_seconds": 900})
    assert first_run(at_close, catchup_from(utc(2024, 11, 29)))[2] == utc(2024, 11, 29, 17, 45)
    # Oldest form of all: no offsets stored.
    assert MarketSessionTimetable.deserialize({"exchange": "24/7", "at": "open"}) == MarketSessionTimetable(
        "24/7", at="open")


def test_summary_and_description():
    assert MarketSessionTimetable("XNYS", every=5).summary == "every 5 min in XNYS sessions"
    assert MarketSessionTimetable("XNYS", at="open").summary == "at XNYS open"
    assert MarketSessionTimetable("XNYS", at="Close").summary == "at XNYS close"
    assert MarketSessionTimetable("XNYS", at="close", close_offset=15).summary == "15 min before XNYS close"
    assert MarketSessionTimetable("XNYS", at="open", open_offset=5).summary == "5 min after XNYS open"
    assert (
        MarketSessionTimetable("XNYS", every=15, open_offset=5, close_offset=15).summary
        == "every 15 min in XNYS sessions (open +5 min, close -15 min)"
    )
    description = MarketSessionTimetable("XNYS", every=15).description
    assert "15-minute bar" in description and "holidays" in description


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of every= "),
        ({"every": 5, "at": "open"}, "exactly one of every= "),
        ({"every": 0}, "every must be whole minutes from 1 to 1440"),
        ({"every": 1441}, "every must be whole minutes from 1 to 1440"),
        ({"every": timedelta(seconds=90)}, "every must be whole minutes"),
        ({"every": "5m"}, "every must be a number of minutes"),
        ({"every": True}, "every must be a number of minutes"),
        ({"at": "noon"}, "at must be 'open' or 'close'"),
        ({"at": "open", "close_offset": -1}, "close_offset must not be negative"),
        ({"every": 5, "open_offset": timedelta(minutes=-5)}, "open_offset must not be negative"),
        ({"every": 5, "open_offset": 720, "close_offset": 720}, "leave no trading window"),
        ({"every": 5, "open_offset": 240, "close_offset": 150}, "lasts 6:30:00"),  # XNYS known without a calendar
        ({"at": "open", "before_close": -1}, "before_close must not be negative"),  # the alias' own name
        ({"every": 5, "open_offset": 5, "after_open": 5}, "give open_offset= or its deprecated alias after_open="),
        ({"every": 5, "close_offset": 0, "before_close": 15}, "give close_offset= or its deprecated alias"),
        ({"exchange": "", "every": 5}, "exchange must be a calendar name"),
    ],
)
@pytest.mark.filterwarnings("ignore:MarketSessionTimetable:DeprecationWarning")
def test_bad_input_fails_at_construction(kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        MarketSessionTimetable(**kwargs)
    assert isinstance(caught.value, ValueError)


def test_validate_checks_exchange_and_regular_session():
    with pytest.raises(InvalidInputError, match=r"unknown market calendar 'NOPE'.*Valid names: .*XNYS"):
        MarketSessionTimetable("NOPE", every=5).validate()
    # A regular session of XPAR (not in the table known without a calendar) lasts 8 h 30 min.
    too_long = MarketSessionTimetable("XPAR", every=5, open_offset=300, close_offset=210)
    with pytest.raises(InvalidInputError, match=r"leave no trading window: a regular session of XPAR lasts 8:30:00"):
        too_long.validate()
    MarketSessionTimetable("XPAR", every=5, open_offset=300, close_offset=209).validate()
    MarketSessionTimetable("XNYS", every=5, open_offset=200, close_offset=189).validate()
    MarketSessionTimetable("24/7", every=5, open_offset=200, close_offset=190).validate()


def test_sessions_too_short_for_the_offsets_get_no_run():
    # Window 09:30+4h = 13:30 NY ... close-0: the 13:00 early close of 2024-07-03 leaves nothing.
    timetable = MarketSessionTimetable("XNYS", at="open", open_offset=240)
    got = runs(timetable, catchup_from(utc(2024, 7, 2)), until=utc(2024, 7, 6))
    assert [r[0] for r in got] == [utc(2024, 7, 2, 17, 30), utc(2024, 7, 5, 17, 30)]


def test_importing_and_constructing_loads_nothing_heavy():
    code = textwrap.dedent(f"""
        import json, sys
        from airflow_provider_portfolio.timetables.market_session import MarketSessionTimetable
        import airflow_provider_portfolio.plugins
        MarketSessionTimetable("XNYS", every=15, close_offset=15).serialize()
        MarketSessionTimetable("XNYS", at="open").summary
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# -- Airflow's serializer and the plugin ------------------------------------------------------------


def _dag_serialization():
    from airflow.serialization import serialized_objects

    # Airflow 3.3 names it DagSerialization; 3.1 SerializedDAG.
    return getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG


@pytest.fixture
def registered(monkeypatch):
    """Register the plugin's timetables the way each Airflow version's plugins manager exposes them."""
    from airflow import plugins_manager

    classes = {QUALNAME: cls for cls in PortfolioPlugin.timetables}
    if hasattr(plugins_manager, "get_timetables_plugins"):  # Airflow >= 3.2
        monkeypatch.setattr(plugins_manager, "get_timetables_plugins", lambda: classes)
    else:  # Airflow 3.1: a module global filled by initialize_timetables_plugins()
        monkeypatch.setattr(plugins_manager, "timetable_classes", classes)
    return classes


def _dag(timetable):
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    with DAG("market_session_roundtrip", schedule=timetable, start_date=utc(2024, 7, 1), catchup=False) as dag:
        BaseOperator(task_id="noop")
    return dag


def test_plugin_lists_the_timetable():
    assert PortfolioPlugin.name == "portfolio"
    assert PortfolioPlugin.timetables == [MarketSessionTimetable]


def test_dag_round_trips_through_airflow_serializer(registered):
    timetable = MarketSessionTimetable("XNYS", every=15, close_offset=15)
    serializer = _dag_serialization()
    data = json.loads(json.dumps(serializer.to_dict(_dag(timetable))))
    assert data["dag"]["timetable"] == {
        "__type": QUALNAME,
        "__var": {"exchange": "XNYS", "every_minutes": 15, "at": None, "open_offset_seconds": 0,
                  "close_offset_seconds": 900},
    }
    restored = serializer.from_dict(data)
    assert isinstance(restored.timetable, MarketSessionTimetable)
    assert restored.timetable == timetable
    assert restored.timetable.summary == "every 15 min in XNYS sessions (close -15 min)"


def test_dag_serialized_with_the_old_field_names_deserializes_through_airflow(registered):
    timetable = MarketSessionTimetable("XNYS", every=15, open_offset=5, close_offset=15)
    serializer = _dag_serialization()
    data = json.loads(json.dumps(serializer.to_dict(_dag(timetable))))
    data["dag"]["timetable"]["__var"] = {"exchange": "XNYS", "every_minutes": 15, "at": None,
                                         "before_close_seconds": 900, "after_open_seconds": 300}
    restored = serializer.from_dict(data)
    assert restored.timetable == timetable
    assert restored.timetable.summary == "every 15 min in XNYS sessions (open +5 min, close -15 min)"


def test_unregistered_timetable_is_refused_by_airflow(monkeypatch):
    from airflow import plugins_manager

    if hasattr(plugins_manager, "get_timetables_plugins"):
        monkeypatch.setattr(plugins_manager, "get_timetables_plugins", lambda: {})
    else:
        monkeypatch.setattr(plugins_manager, "timetable_classes", {})
    with pytest.raises(Exception, match="not registered|could not be imported"):
        _dag_serialization().to_dict(_dag(MarketSessionTimetable("XNYS", at="open")))


def test_real_plugin_loading_registers_the_timetable(tmp_path):
    """A fresh process: Airflow's own plugins manager loads the plugin (from a plugins folder here), the
    DAG serializes and deserializes, and the deserialized timetable schedules."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "portfolio_plugin.py").write_text("from airflow_provider_portfolio.plugins import PortfolioPlugin\n")
    code = textwrap.dedent("""
        import json
        import pendulum
        from airflow.sdk import DAG
        from airflow.sdk.bases.operator import BaseOperator
        from airflow.serialization import serialized_objects
        from airflow.timetables.base import TimeRestriction
        from airflow_provider_portfolio.timetables import MarketSessionTimetable

        ser = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG
        with DAG("d", schedule=MarketSessionTimetable("XNYS", at="close", close_offset=15),
                 start_date=pendulum.datetime(2024, 11, 29, tz="UTC")) as dag:
            BaseOperator(task_id="t")
        restored = ser.from_dict(json.loads(json.dumps(ser.to_dict(dag))))
        info = restored.timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(pendulum.datetime(2024, 11, 29, tz="UTC"), None, True))
        print(json.dumps([type(restored.timetable).__module__, restored.timetable.summary, info.run_after.isoformat()]))
    """)
    env = {**__import__("os").environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
           "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "True"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        "airflow_provider_portfolio.timetables.market_session", "15 min before XNYS close", "2024-11-29T17:45:00+00:00",
    ]


def test_bad_exchange_is_a_dag_import_error(tmp_path):
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    (tmp_path / "bad_exchange.py").write_text(textwrap.dedent("""
        import pendulum
        from airflow.sdk import DAG
        from airflow_provider_portfolio.timetables import MarketSessionTimetable
        dag = DAG("bad_exchange", schedule=MarketSessionTimetable("NYSEE", every=5),
                  start_date=pendulum.datetime(2024, 1, 2, tz="UTC"))
    """))
    bag = DagBag(dag_folder=str(tmp_path))
    errors = "\n".join(bag.import_errors.values())
    assert "unknown market calendar 'NYSEE'" in errors and "Valid names" in errors


def _plugin_entry_point_installed() -> bool:
    from importlib.metadata import entry_points

    return any(ep.value == "airflow_provider_portfolio.plugins:PortfolioPlugin" for ep in entry_points(group="airflow.plugins"))


def test_installed_provider_registers_the_plugin_with_default_settings(tmp_path):
    """No plugins folder, default lazy provider discovery: the installed distribution alone registers it."""
    # Airflow loads provider-info plugins only with lazy_discover_providers=False: the entry point matters.
    assert _plugin_entry_point_installed(), "the airflow.plugins entry point is not installed (pip install -e .)"
    code = textwrap.dedent("""
        import pendulum
        from airflow.sdk import DAG
        from airflow.serialization import serialized_objects
        from airflow_provider_portfolio.timetables import MarketSessionTimetable

        ser = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG
        with DAG("d", schedule=MarketSessionTimetable("XNYS", every=5),
                 start_date=pendulum.datetime(2024, 1, 2, tz="UTC")) as dag:
            pass
        print(ser.from_dict(ser.to_dict(dag)).timetable.summary)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS"}
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "every 5 min in XNYS sessions"
