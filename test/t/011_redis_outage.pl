
# Redis frozen, killed and restarted while writers go on: with
# on_redis_error = queue commits return within the timeouts and the cache
# heals by itself once Redis is back; with error the transaction fails
# cleanly.  The worker backs off (little CPU) and logs the outage once.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('outage', $redis,
	"cachesync.connect_timeout = '300ms'",
	"cachesync.command_timeout = '300ms'");

$node->safe_psql('postgres', q{
	CREATE TABLE wt (id int PRIMARY KEY, v int);
	CREATE TABLE wa (id int PRIMARY KEY, v int);
	CREATE TABLE aa (id int PRIMARY KEY, v int);
	SELECT cachesync.register('wt');
	SELECT cachesync.register('wa', mode => 'write_around');
	SELECT cachesync.register('aa', mode => 'async');
	INSERT INTO wt SELECT g, 0 FROM generate_series(1, 200) g;
	INSERT INTO wa SELECT g, 0 FROM generate_series(1, 200) g;
	INSERT INTO aa SELECT g, 0 FROM generate_series(1, 200) g;
	SELECT cachesync.prefill('wa', ARRAY(SELECT id::text FROM wa));
});

# Waits until the queue is empty and each table's cache equals it
# (write_around: no key may hold a value other than the row's).
sub converged
{
	my ($what) = @_;
	ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cachesync.queue'),
		"$what: the queue drains");
	for my $t (qw(wt aa))
	{
		my $d;
		# an empty Redis is reloaded by the worker within a round or two
		for (1 .. 100)
		{
			$d = CacheSync::Redis::cache_diff($node, $t);
			last if $d->{missing} + $d->{stale} + $d->{orphaned} == 0;
			usleep(100_000);
		}
		is_deeply([ @$d{qw(missing stale orphaned)} ], [ 0, 0, 0 ],
			"$what: $t equals its table (missing/stale/orphaned $d->{missing}/$d->{stale}/$d->{orphaned})");
	}
	my $d = CacheSync::Redis::cache_diff($node, 'wa');
	is($d->{stale} + $d->{orphaned}, 0, "$what: wa holds no stale value");
}

# Runs n single-row updates on each table, one transaction each; returns the
# longest COMMIT in seconds and the number of failures.
sub write_load
{
	my ($n, $round) = @_;
	my ($slowest, $failed) = (0, 0);
	for my $i (1 .. $n)
	{
		my $id = 1 + ($i * 37) % 200;
		my $t0 = time();
		my ($rc) = $node->psql('postgres',
			"UPDATE wt SET v = $round WHERE id = $id; UPDATE wa SET v = $round WHERE id = $id; UPDATE aa SET v = $round WHERE id = $id;");
		my $dt = time() - $t0;
		$slowest = $dt if $dt > $slowest;
		$failed++ if $rc != 0;
	}
	return ($slowest, $failed);
}

converged('start');

# Redis frozen: each commit waits at most command_timeout, then queues
$redis->freeze;
my ($slowest, $failed) = write_load(20, 1);
is($failed, 0, 'frozen Redis: every write commits (on_redis_error = queue)');
cmp_ok($slowest, '<', 1.5, "frozen Redis: no commit waits past the timeout (slowest ${slowest}s)");
ok($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.queue') > 0,
	'the changes wait in the queue');
$redis->thaw;
converged('after the freeze');

# Redis killed: commits fail fast over to the queue
my $logpos = length(slurp_file($node->logfile));
$redis->kill9;
($slowest, $failed) = write_load(20, 2);
is($failed, 0, 'Redis down: every write commits');
cmp_ok($slowest, '<', 1.5, "Redis down: commits stay fast (slowest ${slowest}s)");

# the worker backs off: little CPU while Redis stays down, one log line
my $wpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync worker'");
sub cpu_ticks
{
	my @f = split / /, slurp_file("/proc/$wpid/stat");
	return $f[13] + $f[14];
}
my $c0 = cpu_ticks();
sleep 3;
my $ticks = cpu_ticks() - $c0;
cmp_ok($ticks, '<=', 30, "the worker idles while Redis is down ($ticks ticks in 3 s)");
my $log = substr(slurp_file($node->logfile), $logpos);
my $outages = () = $log =~ /Redis at 127\.0\.0\.1:\d+ is unreachable/g;
is($outages, 1, 'the outage is logged once');

# Redis comes back empty: the worker loads the tables again and replays the
# queue without help
$redis->start;
converged('after Redis restarted empty');
$log = substr(slurp_file($node->logfile), $logpos);
like($log, qr/is reachable again/, 'the recovery is logged');
like($log, qr/holds no cachesync data; loading/, 'the worker reloads an empty Redis');
like($log, qr/the load covered \d+ queued changes; dropping them unshipped/,
	'the changes queued before the load are covered by it, not shipped again');
is($redis->cli('GET', 'public.aa:38'), '{"id":38,"v":2}', 'the last committed value is in Redis');

# Redis killed in the middle of a concurrent load
my $sql = join("\n", map { my $id = 1 + ($_ * 13) % 200;
	"UPDATE wt SET v = v + 1 WHERE id = $id; UPDATE aa SET v = v + 1 WHERE id = $id; UPDATE wa SET v = v + 1 WHERE id = $id;" } (1 .. 3000));
my $file = PostgreSQL::Test::Utils::tempdir() . '/load.sql';
PostgreSQL::Test::Utils::append_to_file($file, $sql);
my ($out, $err) = ('', '');
my $h = IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
		'-d', $node->connstr('postgres'), '-f', $file ], '>', \$out, '2>', \$err);
usleep(300_000);
$redis->kill9;
usleep(500_000);
$redis->start;
ok($h->finish, 'the load committed every statement through the outage') or diag($err);
converged('after Redis was killed mid-load');

# on_redis_error = error: the transaction fails, nothing is half-done
$redis->stop;
my ($rc, $o, $e) = $node->psql('postgres',
	"SET cachesync.on_redis_error = 'error'; UPDATE wt SET v = -1 WHERE id = 1",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/08006: could not write the transaction's changes to Redis/, 'error mode: the commit fails');
like($e, qr/HINT:.*on_redis_error = queue/, 'the hint names the alternative');
isnt($node->safe_psql('postgres', 'SELECT v FROM wt WHERE id = 1'), '-1', 'the update rolled back');
$redis->start;
converged('after error mode');

# FLUSHALL: the same recovery
$redis->cli('FLUSHALL');
converged('after FLUSHALL');

# Redis back from an older snapshot: keys of rows deleted since are still
# there, with older versions or none.  The load sweeps them away.
$redis->cli('SET', 'public.wt:9999', '{"id":9999,"v":1}');
$redis->cli('SET', 'public.aa:9998', '{"id":9998,"v":1}');
$redis->cli('SET', '__cachesync:v:public.aa:9998', '1');
$redis->cli('DEL', '__cachesync:epoch');
converged('after a restore from an older snapshot');
is($redis->cli('EXISTS', 'public.wt:9999') . $redis->cli('EXISTS', 'public.aa:9998'), '00',
	'the keys of rows that are gone are swept by the load');

done_testing();
