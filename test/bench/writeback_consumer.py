#!/usr/bin/python3
"""Hand-written write-back consumer, the baseline for writeback_drain.sh.

    writeback_consumer.py queue  REDIS_PORT STREAM N ROWS   # XADD N entries (pipelined)
    writeback_consumer.py drain  REDIS_PORT STREAM N DSN TABLE
        # XREADGROUP COUNT 500, collapse repeated keys in stream order,
        # execute_values upsert, commit, XACK; prints entries/s
    writeback_consumer.py wait   REDIS_PORT STREAM N DSN TABLE PID LAST_ID
        # SIGCONT the (stopped) write-back worker PID and time it until
        # cachesync.writeback_progress holds LAST_ID for TABLE and nothing
        # is pending in the stream's group (polled every 20 ms over one
        # connection each, so that the polling costs little); prints entries/s

Entries are op=upsert, data={"id": k, "v": i} with k random in 1..ROWS (so
keys repeat), the same shape the cachesync worker reads.
"""
import json
import os
import random
import signal
import sys
import time

import psycopg2
import psycopg2.extras
import redis


def queue(port, stream, n, rows):
    r = redis.Redis(port=port)
    rnd = random.Random(42)
    p = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        k = rnd.randint(1, rows)
        p.xadd(stream, {"op": "upsert", "data": json.dumps({"id": k, "v": i})})
        if i % 5000 == 0:
            p.execute()
    p.execute()


def drain(port, stream, n, dsn, table):
    r = redis.Redis(port=port)
    try:
        r.xgroup_create(stream, "py", id="0", mkstream=True)
    except redis.ResponseError:
        pass
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    done = 0
    t0 = time.monotonic()
    while done < n:
        resp = r.xreadgroup("py", "c1", {stream: ">"}, count=500, block=1000)
        if not resp:
            continue
        entries = resp[0][1]
        last = {}
        for _id, f in entries:      # stream order: the later entry wins
            d = json.loads(f[b"data"])
            last[d["id"]] = d["v"]
        psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO {table} (id, v) VALUES %s "
            "ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
            list(last.items()), page_size=500)
        conn.commit()
        ids = [e[0] for e in entries]
        r.xack(stream, "py", *ids)
        r.xdel(stream, *ids)
        done += len(entries)
    dt = time.monotonic() - t0
    print(f"{n / dt:.0f}")


def wait(port, stream, n, dsn, table, pid, last):
    r = redis.Redis(port=port)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    t0 = time.monotonic()
    os.kill(pid, signal.SIGCONT)
    while True:
        cur.execute("SELECT last_id FROM cachesync.writeback_progress "
                    "WHERE rel = %s::regclass", (table,))
        row = cur.fetchone()
        if row and row[0] == last and r.xpending(stream, "cachesync")["pending"] == 0:
            break
        time.sleep(0.02)
    dt = time.monotonic() - t0
    print(f"{n / dt:.0f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "queue":
        queue(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "wait":
        wait(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6],
             int(sys.argv[7]), sys.argv[8])
    else:
        drain(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
