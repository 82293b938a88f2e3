
# Write-back recovers without help: FLUSHALL (also mid-stream), a deleted
# stream or group, Redis restarted empty; the write-back worker publishes
# its metadata and creates its group again, and stays idle on the CPU while
# Redis is down (no hot loop on errors).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

use CacheSync::Redis;
use CacheSync::WriteBack;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('wbrec', $redis, "cachesync.connect_timeout = '200ms'");

$node->safe_psql('postgres', q{
	CREATE TABLE rc (id int PRIMARY KEY, v text);
	SELECT cachesync.register('rc', mode => 'write_back');
});
my $s = 'public.rc:__writeback';
my $wpid = CacheSync::WriteBack::worker_pid($node);
CacheSync::WriteBack::wait_for(sub { $redis->cli('HEXISTS', '__cachesync:writeback', $s) eq '1' });

# Upserts, retrying while the call is refused (metadata or library not
# there yet); returns the entry id.
sub upsert
{
	my ($id, $v) = @_;
	my $r;
	CacheSync::WriteBack::wait_for(sub {
		$r = $redis->cli('FCALL', 'cachesync_upsert', '2', "public.rc:$id", $s, qq({"id":$id,"v":"$v"}));
		$r =~ /^\d+-\d+$/ }, 60);
	return $r;
}

# Upserts and checks that the row arrives.
sub round_trip
{
	my ($id, $v, $what) = @_;
	my $eid = upsert($id, $v);
	like($eid, qr/^\d+-\d+$/, "$what: the write-back call works again");
	ok(CacheSync::WriteBack::wait_applied($node, 'rc', $eid), "$what: the entry is applied");
	is($node->safe_psql('postgres', "SELECT v FROM rc WHERE id = $id"), $v, "$what: the row is there");
}

round_trip(1, 'before', 'at start');

$redis->cli('FLUSHALL');
round_trip(2, 'after flush', 'after FLUSHALL');
is($redis->cli('XINFO', 'GROUPS', $s) =~ /cachesync/ ? 1 : 0, 1, 'the group was created again');

# FLUSHALL in the middle of a stream being applied
CacheSync::WriteBack::pipe_commands($redis,
	map { [ 'FCALL', 'cachesync_upsert', '2', "public.rc:$_", $s, qq({"id":$_,"v":"mid"}) ] } (100 .. 2099));
$redis->cli('FLUSHALL');
round_trip(3, 'after mid-stream flush', 'after FLUSHALL mid-stream');

$redis->cli('DEL', $s);
round_trip(4, 'stream deleted', 'after the stream was deleted');

$redis->cli('XGROUP', 'DESTROY', $s, 'cachesync');
round_trip(5, 'group deleted', 'after the group was deleted');

# Redis down: the worker backs off instead of spinning
$wpid = CacheSync::WriteBack::worker_pid($node);
sub cpu_ticks
{
	open(my $fh, '<', "/proc/$wpid/stat") or return undef;
	my $stat = <$fh>;
	close $fh;
	$stat =~ s/^.*\) //;
	my @f = split / /, $stat;
	return $f[11] + $f[12];    # utime + stime
}
$redis->stop;
sleep(1);
my $t0 = cpu_ticks();
sleep(3);
my $used = cpu_ticks() - $t0;
ok($used < 30, "the worker stays idle while Redis is down ($used ticks in 3 s)");
$redis->start;
round_trip(6, 'after restart', 'after Redis restarted empty');

my $log = slurp_file($node->logfile);
my $failures = () = $log =~ /cachesync writeback: .* failed; retrying/g;
ok($failures < 20, "failures are logged once per outage, not per retry ($failures lines)");
ok(CacheSync::WriteBack::wait_for(sub {
	$node->safe_psql('postgres', "SELECT wb_pending FROM cachesync.stats WHERE rel = 'rc'::regclass") eq '0' }),
	'nothing is pending in the end');

# A table unregistered while a batch waits for its lock: the batch finds the
# registration gone once it has the lock, and the worker carries on (it
# crashed on a NULL registration there once, restarting all of Postgres).
$node->safe_psql('postgres', q{
	CREATE TABLE ur (id int PRIMARY KEY, v text);
	SELECT cachesync.register('ur', mode => 'write_back');
});
CacheSync::WriteBack::wait_for(sub {
	$redis->cli('HEXISTS', '__cachesync:writeback', 'public.ur:__writeback') eq '1' });
$wpid = CacheSync::WriteBack::worker_pid($node);
my $unreg = $node->background_psql('postgres');
$unreg->query_safe("BEGIN; SELECT cachesync.unregister('ur')");
$redis->cli('FCALL', 'cachesync_upsert', '2', 'public.ur:1', 'public.ur:__writeback', '{"id":1,"v":"x"}');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	 WHERE backend_type = 'cachesync writeback' AND wait_event_type = 'Lock'}),
	'a batch waits for the lock of a table being unregistered');
$unreg->query_safe('COMMIT');
$unreg->quit;
sleep(1);
unlike(slurp_file($node->logfile), qr/terminated by signal/,
	'the unregistration committed under the batch: no crash');
is(CacheSync::WriteBack::worker_pid($node), $wpid, 'the same write-back worker runs on');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ur'), '0', 'the entry was not applied');

done_testing();
