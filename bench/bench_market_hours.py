"""Cost of a MarketHoursSensor poke, with its answers checked against pandas-market-calendars.

Measures, side by side:

- in a fresh process: the first poke (imports, calendar schedule) and a year of sessions, cold;
- in this process: later pokes (average over many) and a year of sessions, warm; the ratio of a
  cold first poke to a warm one.

Checks (exit status 1 when one fails): at fixed instants (a regular session, before the open, an
early close, a holiday, a weekend) the sensor's answer equals what pandas-market-calendars'
own schedule says; a warm poke costs under 1 ms.

Usage: python bench/bench_market_hours.py [--pokes 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone

from checks import REPO, check, exit_status, timed

FIRST = """
import json, time
from datetime import datetime, timezone
t0 = time.perf_counter()
from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor
sensor = MarketHoursSensor(task_id="open", exchange="XNYS", when_closed="wait")
t1 = time.perf_counter()
sensor.poke({})
t2 = time.perf_counter()
from airflow_provider_portfolio.market.calendar import MarketCalendar
MarketCalendar("XLON").sessions("2025-01-01", "2025-12-31")
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_poke": t2 - t1, "year_cold": t3 - t2}))
"""

# (instant, is the XNYS market open then), from the NYSE's published 2024 calendar.
INSTANTS = [
    ("2024-06-04T15:00:00+00:00", True),  # a regular Tuesday, 11:00 ET
    ("2024-06-04T13:29:00+00:00", False),  # one minute before the open
    ("2024-11-29T17:59:00+00:00", True),  # early close day, 12:59 ET
    ("2024-11-29T18:00:00+00:00", False),  # at the early close
    ("2024-07-04T15:00:00+00:00", False),  # Independence Day
    ("2024-06-08T15:00:00+00:00", False),  # Saturday
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pokes", type=int, default=2000)
    args = parser.parse_args()

    out = subprocess.run([sys.executable, "-c", FIRST], capture_output=True, text=True, check=True, cwd=REPO)
    cold = json.loads(out.stdout.strip().splitlines()[-1])

    import pandas_market_calendars as mcal

    from airflow_provider_portfolio.market.calendar import MarketCalendar
    from airflow_provider_portfolio.sensors.market_hours import MarketHoursSensor

    sensor = MarketHoursSensor(task_id="open", exchange="XNYS", when_closed="wait")
    sensor.poke({})  # warm this process
    warm_poke, _ = timed(lambda: sensor.poke({}), repeat=args.pokes)
    MarketCalendar("XLON").sessions("2025-01-01", "2025-12-31")
    year_warm, _ = timed(lambda: MarketCalendar("XLON").sessions("2025-01-01", "2025-12-31"), repeat=200)

    print("market hours (XNYS sensor; XLON for a year of sessions)")
    print(f"  import of the sensor module        {cold['import'] * 1e3:9.1f} ms  (fresh process)")
    print(f"  first poke in a process            {cold['first_poke'] * 1e3:9.1f} ms  (loads the calendar)")
    print(f"  later poke, average of {args.pokes:<6}     {warm_poke * 1e6:9.1f} us")
    print(f"  ratio first / later poke           {cold['first_poke'] / warm_poke:9.0f}x")
    print(f"  a year of sessions, cold / warm    {cold['year_cold'] * 1e3:9.1f} ms / {year_warm * 1e6:.1f} us")

    schedule = mcal.get_calendar("XNYS").schedule("2024-06-01", "2024-12-31")
    for text, expected in INSTANTS:
        at = datetime.fromisoformat(text)
        sensor._now = lambda at=at: at  # the sensor's one clock, fixed for the check
        answer = sensor.poke({}).is_done
        reference = bool(((schedule["market_open"] <= at) & (at < schedule["market_close"])).any())
        check(answer == reference == expected, f"{text}: sensor says {'open' if answer else 'closed'}, "
                                               f"pandas-market-calendars {'open' if reference else 'closed'}")
    check(warm_poke < 1e-3, f"a later poke costs {warm_poke * 1e6:.1f} us < 1 ms")
    print(f"(now: {datetime.now(timezone.utc).isoformat(timespec='seconds')})")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
