"""Commit -> Redis visibility lag; helper of test/bench/lag.sh.

usage: /usr/bin/python3 lag_sampler.py DSN REDIS_PORT N DURATION_S FIRST_ID LAST_ID

N times over DURATION_S seconds (evenly paced): pick a row X in
[FIRST_ID, LAST_ID] (a range the background pgbench load does not touch, so no
row-lock waits), run `UPDATE bench SET t = clock_timestamp() WHERE id = X
RETURNING t` in autocommit (execute() returns once COMMIT is done), then poll
`GET public.bench:X` until the cached JSON's t is >= the returned t.  The lag
is the time from the UPDATE's return to the first GET that shows the new value
(so it includes one GET round trip from Python plus JSON parsing, ~0.3 ms here,
and the poll interval, ~0.1 ms).

Prints one line: n=.. timeouts=.. first_get_hits=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. mean_ms=..
(first_get_hits: samples whose very first GET already showed the value).
"""
import datetime
import json
import random
import sys
import time

import psycopg2
import redis

dsn, port, n, duration, lo, hi = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                  float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
TIMEOUT = 2.0   # a sample not visible after 2 s counts as a timeout

pg = psycopg2.connect(dsn)
pg.autocommit = True
cur = pg.cursor()
r = redis.Redis(host="127.0.0.1", port=port)
key_of = "public.bench:%d"


def cached_t(key):
    raw = r.get(key)
    if raw is None:
        return None
    t = json.loads(raw).get("t")
    return datetime.datetime.fromisoformat(t) if t else None


lags = []
timeouts = 0
first_hits = 0
interval = duration / n
start = time.monotonic()
for i in range(n):
    # pace: sample i starts at start + i * interval
    wait = start + i * interval - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    x = random.randint(lo, hi)
    key = key_of % x
    cur.execute("UPDATE bench SET t = clock_timestamp() WHERE id = %s RETURNING t", (x,))
    committed = time.perf_counter()
    want = cur.fetchone()[0]
    polls = 0
    while True:
        got = cached_t(key)
        now = time.perf_counter()
        polls += 1
        if got is not None and got >= want:
            lags.append((now - committed) * 1000.0)
            if polls == 1:
                first_hits += 1
            break
        if now - committed > TIMEOUT:
            timeouts += 1
            break
        time.sleep(0.0001)

lags.sort()


def pct(p):
    if not lags:
        return float("nan")
    return lags[min(len(lags) - 1, int(round(p / 100.0 * (len(lags) - 1))))]


print("n=%d timeouts=%d first_get_hits=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f mean_ms=%.3f elapsed_s=%.1f"
      % (len(lags), timeouts, first_hits, pct(50), pct(90), pct(99),
         lags[-1] if lags else float("nan"), sum(lags) / len(lags) if lags else float("nan"),
         time.monotonic() - start))
