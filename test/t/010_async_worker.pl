
# The background worker ships the async queue: end to end, waking on commit,
# TRUNCATE, and no change lost or misapplied when the worker is SIGKILLed or
# Postgres stops with -m immediate in the middle of a load.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('async', $redis,
	"cachesync.batch_size = 500");

$node->safe_psql('postgres', q{
	CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
	SELECT cachesync.register('items', mode => 'async');
});

# Waits until the queue is empty and the cache equals the table.
sub converged
{
	my ($table, $what) = @_;
	ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cachesync.queue'),
		"$what: the queue drains");
	my $d = CacheSync::Redis::cache_diff($node, $table);
	is_deeply([ @$d{qw(missing stale orphaned)} ], [ 0, 0, 0 ],
		"$what: cache equals the table ($d->{rows} rows; missing/stale/orphaned "
		  . "$d->{missing}/$d->{stale}/$d->{orphaned})");
}

my $worker_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync worker'");
ok($worker_pid > 0, 'the worker runs');

# end to end: inserts, updates, key changes, deletes
$node->safe_psql('postgres', q{
	INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 2000) g;
	UPDATE items SET qty = qty * 2 WHERE id % 3 = 0;
	UPDATE items SET id = id + 10000 WHERE id % 7 = 0;
	DELETE FROM items WHERE id % 5 = 0;
});
converged('items', 'inserts, updates, key changes, deletes');
is($redis->cli('GET', 'public.items:3'), '{"id":3,"name":"item 3","qty":6}',
	'a value is row_to_json of the committed row');
is($redis->cli('EXISTS', 'public.items:7'), '0', 'the old key of a key change is gone');
is($redis->cli('EXISTS', 'public.items:10007'), '1', 'its new key is there');

# the worker wakes on commit: an update shows up well before the idle poll
$node->safe_psql('postgres', "UPDATE items SET name = 'fast' WHERE id = 1");
my $t0 = time();
while (time() - $t0 < 5 && $redis->cli('GET', 'public.items:1') !~ /fast/) { usleep(5_000); }
like($redis->cli('GET', 'public.items:1'), qr/fast/, 'the change arrives');

# rolled-back work never reaches the queue or Redis
$node->safe_psql('postgres', q{
	BEGIN; UPDATE items SET name = 'never' WHERE id = 2; ROLLBACK;
	BEGIN; UPDATE items SET name = 'kept' WHERE id = 4;
	SAVEPOINT s; UPDATE items SET name = 'never' WHERE id = 4; ROLLBACK TO s; COMMIT;
});
converged('items', 'rollback and savepoint');
unlike($redis->cli('GET', 'public.items:2') . $redis->cli('GET', 'public.items:4'),
	qr/never/, 'no rolled-back value reached Redis');

# entries that land before the worker's position in the queue (space a
# VACUUM freed, or a queue the VACUUM truncated) are shipped too: the worker
# resumes where it stopped, so it must learn to look back
$node->safe_psql('postgres', "UPDATE items SET qty = qty + 1");
converged('items', 'a queue of many blocks');
$node->safe_psql('postgres', "VACUUM cachesync.queue");
$node->safe_psql('postgres', "UPDATE items SET name = 'after vacuum' WHERE id = 3");
converged('items', 'an entry in space freed before the worker\'s position');
like($redis->cli('GET', 'public.items:3'), qr/after vacuum/,
	'the entry before the worker\'s position was shipped');

# the worker keeps its queries prepared: a column added to the table shows
# up in the values it ships next (the plan is revalidated, not reused stale)
$node->safe_psql('postgres', q{
	ALTER TABLE items ADD COLUMN note text DEFAULT 'n';
	UPDATE items SET qty = 99 WHERE id = 3;
});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cachesync.queue'),
	'a column added: the queue drains');
is($redis->cli('GET', 'public.items:3'),
	'{"id":3,"name":"after vacuum","qty":99,"note":"n"}',
	'the shipped value has the new column');
$node->safe_psql('postgres', q{
	ALTER TABLE items DROP COLUMN note;
	UPDATE items SET qty = 3 WHERE id = 3;
});
converged('items', 'the column dropped again');

# TRUNCATE removes every key, then new rows come back
$node->safe_psql('postgres', q{
	BEGIN; TRUNCATE items; INSERT INTO items VALUES (1, 'after truncate', 1); COMMIT;
});
converged('items', 'truncate');
is($redis->cli('GET', 'public.items:1'), '{"id":1,"name":"after truncate","qty":1}',
	'the row inserted after TRUNCATE is cached');

# A writer load in the background (many small transactions).
sub start_load
{
	my ($from, $to) = @_;
	my $sql = join("\n", map {
		"INSERT INTO items VALUES ($_, 'load', $_) ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1;"
	} ($from .. $to));
	my $file = PostgreSQL::Test::Utils::tempdir() . "/load_$from.sql";
	PostgreSQL::Test::Utils::append_to_file($file, $sql);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-f', $file ],
		'>', \$out, '2>', \$err);
	return $h;
}

# the worker SIGKILLed mid-load: the postmaster restarts everything, the
# queue survives, nothing is lost
$node->safe_psql('postgres', 'SELECT pg_sleep(0)');
$redis->freeze;    # let a backlog build: the worker cannot ship
my $h = start_load(20001, 23000);
$node->poll_query_until('postgres', 'SELECT count(*) > 500 FROM cachesync.queue');
$redis->thaw;
$worker_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync worker'");
kill 'KILL', $worker_pid;
eval { $h->finish };    # the crash restart may cut the load short: it does not matter
$node->poll_query_until('postgres', 'SELECT true') or die 'node did not come back';
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'cachesync worker'");
converged('items', 'after the worker was SIGKILLed mid-load');

# Postgres stopped with -m immediate mid-load, then started again
$redis->freeze;
$h = start_load(30001, 33000);
$node->poll_query_until('postgres', 'SELECT count(*) > 500 FROM cachesync.queue');
$node->stop('immediate');
eval { $h->finish };
$redis->thaw;
$node->start;
converged('items', 'after an immediate stop mid-load');

# exactly the committed state, not more: a replay twice is harmless
my $count = $node->safe_psql('postgres', "SELECT count(*) FROM items WHERE name = 'load'");
ok($count > 0, "the load committed $count rows before the stops");

done_testing();
