
# cachesync.reload() under load: writes committed while it runs win (no stale
# value afterwards), progress is visible while it runs, it can be cancelled
# midway (even inside a Redis wait) and Redis is no worse for it, and
# cachesync.stats records when it last ran.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CacheSync::Redis;

my $ROWS = 50_000;
my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('reload', $redis, 'cachesync.batch_size = 500');

$node->safe_psql('postgres', qq{
	CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
	INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, $ROWS) g;
	SELECT cachesync.register('items');
});
is($node->safe_psql('postgres', "SELECT last_reload_at IS NULL FROM cachesync.stats WHERE rel = 'items'::regclass"),
	't', 'no reload yet');

# Runs a validation to its end; returns "missing|stale|orphaned".
sub drift
{
	my $id = $node->safe_psql('postgres', "SELECT cachesync.validate('items')");
	return $node->safe_psql('postgres', qq{
		SELECT concat_ws('|', missing, stale, orphaned) FROM cachesync.wait_validation($id, '2 min')});
}

# reload with concurrent updates, deletes and inserts (pgbench, 2 clients)
my $script = $node->basedir . '/writes.sql';
open(my $fh, '>', $script) or die $!;
print $fh <<'EOS';
\set id random(1, 60000)
UPDATE items SET qty = qty + 1, name = 'updated ' || :id WHERE id = :id;
DELETE FROM items WHERE id = :id + 1 AND :id % 10 = 0;
INSERT INTO items VALUES (:id + 100000, 'new', 0) ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1;
EOS
close $fh;
my ($bout, $berr) = ('', '');
my $bench = IPC::Run::start(
	[ $node->installed_command('pgbench'), '-n', '-T', '6', '-c', '2', '-f', $script, '-d', $node->connstr('postgres') ],
	'>', \$bout, '2>', \$berr);
my $loaded = $node->safe_psql('postgres', 'SELECT cachesync.reload(\'items\')');
ok($loaded >= $ROWS * 0.8, "reload ran while pgbench wrote ($loaded rows)");
$bench->finish;
like($bout, qr/number of transactions actually processed: [1-9]/, 'the writes ran concurrently');
my $d = CacheSync::Redis::cache_diff($node, 'items');
is_deeply([ @$d{qw(missing stale orphaned)} ], [ 0, 0, 0 ],
	"no stale value after a reload with concurrent writes ($d->{rows} rows)");
is(drift(), '0|0|0', 'validate agrees');
is($node->safe_psql('postgres', "SELECT last_reload_at > now() - interval '1 min' FROM cachesync.stats WHERE rel = 'items'::regclass"),
	't', 'cachesync.stats records the reload');

# drift before a reload that will be cancelled
# (pgbench above may have deleted some of ids 1..20: count what was updated)
my $behind = $node->safe_psql('postgres', q{
	SET cachesync.enabled = off;
	WITH u AS (UPDATE items SET name = 'behind the cache' WHERE id <= 20 RETURNING 1)
	SELECT count(*) FROM u;
});
$redis->cli('SET', 'public.items:999999', '{"id":999999}');
$redis->cli('DEL', 'public.items:30');
my $before = drift();
is($before, "1|$behind|1", 'drift before the cancelled reload');

# progress is visible, and a cancel inside a Redis wait ends it at once
my ($rout, $rerr) = ('', '');
my $reload = IPC::Run::start(
	[ $node->installed_command('psql'), '-X', '-d', $node->connstr('postgres'), '-c',
	  "SET cachesync.command_timeout = '60s'; SELECT cachesync.reload('items')" ],
	'>', \$rout, '2>', \$rerr);
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'cachesync.reload: "items": % rows written%'}),
	'progress shows in pg_stat_activity');
$redis->freeze;
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
	    AND (query LIKE 'cachesync.reload:%' OR query LIKE '%SELECT cachesync.reload(%')");
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$reload->finish;
$redis->thaw;
like($rerr, qr/canceling statement due to user request/, 'the reload was cancelled midway');
unlike($rout, qr/^\s*\d+\s*$/m, 'it returned no row count');
my ($m, $s, $o) = split /\|/, drift();
my ($m0, $s0, $o0) = split /\|/, $before;
ok($m <= $m0 && $s <= $s0 && $o <= $o0, "Redis is no worse after the cancel (drift $m|$s|$o, before $before)");

# the next reload completes the work
$node->safe_psql('postgres', "SELECT cachesync.reload('items')");
is(drift(), '0|0|0', 'a full reload afterwards leaves no drift');

done_testing();
