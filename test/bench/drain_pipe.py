"""Writes a Redis protocol file for `redis-cli --pipe`; helper of test/bench/drain.sh.

usage: /usr/bin/python3 drain_pipe.py DSN OUT set|fcall|fcall_many PASSES

One command per row of bench, PASSES times over the table (2 passes over 100k
rows = 200k commands, like the 200k queued changes of drain.sh), with the
row's row_to_json() text as the value (what cachesync stores for format json):
  set:   SET pipe:bench:<id> <json>
  fcall: FCALL cachesync_put 2 pipe:bench:<id> pipe:v:bench:<id> <version> 0 json <json>
         (the fenced write the worker sends for each row; needs the cachesync
         function library, which the worker loads into Redis when it connects)
  fcall_many: FCALL cachesync_put_many 256 <128 (key, version key) pairs>
         <version> 0 json <128 json values>, the multi-key call populators
         send (128 rows per call); prints the rows, not the commands
"""
import sys

import psycopg2

dsn, out, kind, passes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def resp(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("SELECT id, row_to_json(b)::text FROM bench b ORDER BY id")
rows = cur.fetchall()
version = 1
MANY = 128
with open(out, "wb") as f:
    for _ in range(passes):
        if kind == "fcall_many":
            for i in range(0, len(rows), MANY):
                chunk = rows[i:i + MANY]
                version += 1
                keys = []
                for rid, _js in chunk:
                    keys += [b"pipe:bench:%d" % rid, b"pipe:v:bench:%d" % rid]
                f.write(resp(b"FCALL", b"cachesync_put_many", len(keys), *keys, version, b"0", b"json",
                             *[js.encode() for _rid, js in chunk]))
            continue
        for rid, js in rows:
            key = b"pipe:bench:%d" % rid
            if kind == "set":
                f.write(resp(b"SET", key, js.encode()))
            else:
                version += 1
                f.write(resp(b"FCALL", b"cachesync_put", b"2", key, b"pipe:v:bench:%d" % rid,
                             version, b"0", b"json", js.encode()))
print(len(rows) * passes)
