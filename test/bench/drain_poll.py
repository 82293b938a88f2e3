"""Polls cachesync.queue until it is empty; helper of test/bench/drain.sh.

usage: /usr/bin/python3 drain_poll.py DSN T0 [TIMEOUT_S]

T0 is the wall-clock time (epoch seconds) Redis answered again.  The poller
first wakes the worker with pg_reload_conf() (SIGHUP sets its latch; after a
Redis outage it may otherwise sleep up to its 5 s back-off), then every 200 ms
reads the head of the queue through its primary key (cheap, unlike count(*)
over 200k rows, which would steal CPU from the worker on a 2-core box).
Prints one line: "total_s=<T0 -> empty> first_s=<T0 -> first batch gone> polls=N".
"""
import sys
import time

import psycopg2

dsn, t0 = sys.argv[1], float(sys.argv[2])
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 300.0

conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()
cur.execute("SELECT pg_reload_conf()")
cur.execute("SELECT ctid FROM cachesync.queue LIMIT 1")
row0 = cur.fetchone()
head0 = row0[0] if row0 else None
first = None
polls = 0
while True:
    cur.execute("SELECT ctid FROM cachesync.queue LIMIT 1")
    row = cur.fetchone()
    now = time.time()
    polls += 1
    if first is None and (row is None or row[0] != head0):
        first = now - t0
    if row is None:
        break
    if now - t0 > timeout:
        print("timeout after %.1f s, head id %s" % (now - t0, row[0]))
        sys.exit(1)
    # the queue has no index: a poll scans the dead entries at its head, so
    # poll rarely enough not to steal the worker's CPU
    time.sleep(0.2)
total = time.time() - t0
cur.execute("SELECT count(*) FROM cachesync.queue")
left = cur.fetchone()[0]
print("total_s=%.3f first_s=%.3f polls=%d left=%d" % (total, first, polls, left))
