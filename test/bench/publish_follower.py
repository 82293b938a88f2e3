#!/usr/bin/python3
"""test/bench/publish_follower.py — the Pub/Sub messages of notify, without cachesync.

    publish_follower.py <dsn> <redis port> <table channel> <all channel> <count file>

Every TICK seconds it reads the next transaction id Postgres will hand out
(pg_snapshot_xmax(pg_current_snapshot()): no xid is assigned to the reader)
and, for each xid handed out since the last tick, sends the two PUBLISH
commands notify sends for a one-row transaction: the key on the table's
channel and on the all-tables channel.  Each pgbench UPDATE transaction takes
exactly one xid, so the messages follow the committed transactions one for
one (the worker's and autovacuum's few xids add a handful).  The commands are
pre-built RESP written in one send per tick, the integer replies read and
dropped: the client side costs next to nothing, so what the run pays is the
messages themselves (Redis's PUBLISH and fan-out, the subscriber).  Batching
a tick's messages is cheaper for Redis than one small write per commit, which
keeps this a floor.  On SIGTERM it writes the number of messages sent to
<count file>.
"""
import signal
import socket
import sys
import time

import psycopg2

TICK = 0.02

dsn, port, table_channel, all_channel, count_file = sys.argv[1:6]
stop = False


def on_term(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()


def next_xid():
    cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    return cur.fetchone()[0]


# one key of the usual length for every message: Redis's cost does not
# depend on which key, and building no string per message keeps this
# process's CPU out of the measurement
KEY = "public.bench:54321"
PAIR = resp("PUBLISH", table_channel, KEY) + resp("PUBLISH", all_channel, KEY)
sock = socket.create_connection(("127.0.0.1", int(port)))
sock.setblocking(False)
last = next_xid()
sent = 0
while not stop:
    time.sleep(TICK)
    x = next_xid()
    if x > last:
        sock.setblocking(True)
        sock.sendall(PAIR * (x - last))
        sock.setblocking(False)
        sent += 2 * (x - last)
    last = x
    try:
        while sock.recv(1 << 16):
            pass
    except BlockingIOError:
        pass
with open(count_file, "w") as f:
    f.write("%d\n" % sent)
