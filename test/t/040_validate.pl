
# cachesync.validate(): a background job finds exactly the drift injected by
# hand in Redis (missing keys, stale values, orphaned keys), repairs it, does
# not count JSON key order or whitespace as drift, compares hashes as field
# sets, never runs twice on one table, can be cancelled, and a job
# interrupted by a server restart shows as failed.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CacheSync::Redis;

my $ROWS = 100_000;
my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('validate', $redis);

$node->safe_psql('postgres', qq{
	CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
	INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, $ROWS) g;
	SELECT cachesync.register('items');
	CREATE TABLE h (id int PRIMARY KEY, a text, b int);
	INSERT INTO h SELECT g, 'a' || g, g FROM generate_series(1, 100) g;
	SELECT cachesync.register('h', format => 'hash');
});
is($node->safe_psql('postgres', 'SELECT cachesync.reload()'), $ROWS + 100, 'reload loads every row');

# Runs a validation to its end; returns "state|rows|missing|stale|orphaned|repaired".
sub validate
{
	my ($rel, $repair) = @_;
	$repair //= 'false';
	my $id = $node->safe_psql('postgres', "SELECT cachesync.validate('$rel', $repair)");
	return $node->safe_psql('postgres', qq{
		SELECT concat_ws('|', state, rows_checked, missing, stale, orphaned, repaired)
		  FROM cachesync.wait_validation($id, '2 min')});
}

is(validate('items'), "done|$ROWS|0|0|0|0", 'a fresh cache has no drift');

# drift: 7 keys removed, 5 values altered, 3 keys without a row
for my $i (1 .. 7) { $redis->cli('DEL', "public.items:" . ($i * 1000)); }
for my $i (1 .. 5) { $redis->cli('SET', "public.items:" . ($i * 1000 + 1), qq({"id":1,"name":"drift","qty":0})); }
for my $i (1 .. 3) { $redis->cli('SET', "public.items:" . (900_000 + $i), '{"id":0}'); }
# not drift: another JSON spelling of the same value, and the change stream
$redis->cli('SET', 'public.items:42', '{ "qty": 42,  "name": "item 42", "id": 42 }');
$redis->cli('XADD', 'public.items:__changes', '*', 'op', 'upsert');

my $id = $node->safe_psql('postgres', "SELECT cachesync.validate('items')");
my $row = $node->safe_psql('postgres', qq{
	SELECT concat_ws('|', state, rows_checked, missing, stale, orphaned, repaired)
	  FROM cachesync.wait_validation($id, '2 min')});
is($row, "done|$ROWS|7|5|3|0", 'validate reports exactly the injected drift (7 missing, 5 stale, 3 orphaned)');
is($node->safe_psql('postgres', qq{
	SELECT (examples->'missing') ? 'public.items:1000',
	       (examples->'stale') ? 'public.items:1001',
	       (examples->'orphaned') ? 'public.items:900001'
	  FROM cachesync.validations WHERE id = $id}), 't|t|t', 'examples name the drifted keys');
is($node->safe_psql('postgres', "SELECT last_validation_id FROM cachesync.stats WHERE rel = 'items'::regclass"),
	$id, 'cachesync.stats shows the last validation');
is($redis->cli('GET', 'public.items:1001'), '{"id":1,"name":"drift","qty":0}', 'without repair nothing changes');

is(validate('items', 'true'), "done|$ROWS|7|5|3|15", 'repair fixes all 15 drifted keys');
is(validate('items'), "done|$ROWS|0|0|0|0", 'a second validation finds nothing');
my $d = CacheSync::Redis::cache_diff($node, 'items');
is_deeply([ @$d{qw(missing stale orphaned)} ], [ 0, 0, 0 ], 'the cache equals the table');
is($redis->cli('GET', 'public.items:42'), '{ "qty": 42,  "name": "item 42", "id": 42 }',
	'a value that differs only in spelling is left alone');
is($redis->cli('EXISTS', 'public.items:__changes'), '1', 'the change stream is not an orphan');

# hashes are compared as field sets
$redis->cli('HSET', 'public.h:3', 'extra', 'x');
$redis->cli('HSET', 'public.h:4', 'b', '5');
$redis->cli('DEL', 'public.h:5');
is(validate('h', 'true'), 'done|100|1|2|0|3', 'hash drift: an extra field and a changed field are stale');
is(validate('h'), 'done|100|0|0|0|0', 'hash drift repaired');

# two jobs never run on one table at once (the first is queued until commit)
my ($ret, $out, $err) = $node->psql('postgres',
	"BEGIN; SELECT cachesync.validate('items'); SELECT cachesync.validate('items'); COMMIT");
like($err, qr/validation job \d+ is already running on this table/, 'a second job on the same table is refused');
($ret, $out, $err) = $node->psql('postgres',
	"BEGIN; SELECT cachesync.validate('h'); SELECT cachesync.validate(); COMMIT");
like($err, qr/already running on a registered table/, 'a job over every table is refused while one runs');
is($node->safe_psql('postgres', "SELECT count(*) FROM cachesync.validations WHERE state IN ('queued', 'running')"),
	'0', 'the refused calls left no job behind');

# cancel: the job blocks on a table lock, is cancelled, and stops there
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE');
$id = $node->safe_psql('postgres', "SELECT cachesync.validate('items')");
ok($node->poll_query_until('postgres', qq{
	SELECT state = 'running' FROM cachesync.validations WHERE id = $id}), 'the job runs');
is($node->safe_psql('postgres', "SELECT cachesync.cancel_validation($id)"), 't', 'cancel_validation stops it');
$locker->query_safe('COMMIT');
is($node->safe_psql('postgres', "SELECT state FROM cachesync.wait_validation($id)"), 'cancelled',
	'wait_validation returns the cancelled job');
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'cachesync validation'}),
	'its worker is gone');
is($node->safe_psql('postgres', "SELECT cachesync.cancel_validation($id)"), 'f', 'cancelling an ended job does nothing');

# wait_validation gives up at its timeout, and a cancel interrupts it
$locker->query_safe('BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE');
$id = $node->safe_psql('postgres', "SELECT cachesync.validate('items')");
($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM cachesync.wait_validation($id, '200 ms')");
like($err, qr/did not finish within the timeout/, 'wait_validation times out');

# a restart while the job runs: it is marked failed, not left running
ok($node->poll_query_until('postgres', qq{
	SELECT state = 'running' FROM cachesync.validations WHERE id = $id}), 'the job runs');
$node->stop('immediate');
eval { $locker->quit; };
$node->start;
is($node->safe_psql('postgres', "SELECT state, error LIKE 'interrupted%' FROM cachesync.validations WHERE id = $id"),
	'failed|t', 'after a restart the interrupted job shows as failed');
is(validate('items'), "done|$ROWS|0|0|0|0", 'a new validation of the table runs');
is($node->safe_psql('postgres', "SELECT state FROM cachesync.validation_jobs WHERE id = $id"),
	'failed', 'and the interrupted job is recorded as failed');

done_testing();
