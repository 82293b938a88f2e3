
# Write-back is exactly once in effect across crashes: the write-back worker
# SIGKILLed and Postgres stopped with -m immediate in the middle of a stream;
# a trigger records every application of every entry, and each entry must be
# applied exactly once.  Twice: through the collapsed set-based path (the
# default), with keys unique within every batch so that no entry is folded
# away, and with collapsing off.  Entries at or before the stored progress are skipped
# (what happens after a crash between the commit and XACK).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use CacheSync::Redis;
use CacheSync::WriteBack;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('wbcrash', $redis, "cachesync.batch_size = 200");

$node->safe_psql('postgres', q{
	CREATE TABLE acc (id int PRIMARY KEY, seq int NOT NULL);
	CREATE TABLE audit (seq int NOT NULL);
	-- every application of an entry leaves its seq here (slowly, so the
	-- stream is still being applied when the crashes come)
	CREATE FUNCTION count_it() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN INSERT INTO audit VALUES (NEW.seq); PERFORM pg_sleep(0.0005); RETURN NEW; END$$;
	CREATE TRIGGER count_it AFTER INSERT OR UPDATE ON acc FOR EACH ROW EXECUTE FUNCTION count_it();
	GRANT INSERT ON audit TO PUBLIC;
	SELECT cachesync.register('acc', mode => 'write_back');
});
my $stream = 'public.acc:__writeback';
CacheSync::WriteBack::worker_pid($node);
CacheSync::WriteBack::wait_for(sub {
	$redis->cli('HEXISTS', '__cachesync:writeback', $stream) eq '1' });

# One crash run: entries with unique keys per batch, the write-back worker
# SIGKILLed, then an immediate stop, both mid-stream.
sub crash_run
{
	my ($what) = @_;
	my $n = 6000;
	my (@cmds, %last);
	for my $seq (1 .. $n)
	{
		my $k = $seq % 400;
		push @cmds, [ 'FCALL', 'cachesync_upsert', '2', "public.acc:$k", $stream, qq({"id":$k,"seq":$seq}) ];
		$last{$k} = $seq;
	}
	CacheSync::WriteBack::pipe_commands($redis, @cmds);
	# a key of its own: any 200 consecutive entries have distinct keys, so that
	# with cachesync.writeback_collapse on (the default) no entry is folded into
	# another and every one must fire the trigger exactly once
	my $end = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.acc:400', $stream,
		qq({"id":400,"seq":@{[$n + 1]}}));
	$last{400} = $n + 1;

	# SIGKILL the write-back worker mid-stream (the postmaster restarts everything)
	ok($node->poll_query_until('postgres', 'SELECT count(*) > 1000 FROM audit'), "$what: applying");
	my $wpid = CacheSync::WriteBack::worker_pid($node);
	kill 'KILL', $wpid;
	$node->poll_query_until('postgres', 'SELECT true') or die 'node did not come back';
	my $after_kill = $node->safe_psql('postgres', 'SELECT count(*) FROM audit');
	note("applied when killed: about $after_kill");

	# then an immediate stop mid-stream
	ok($node->poll_query_until('postgres', "SELECT count(*) > $after_kill + 1000 FROM audit"),
		"$what: applying again after the SIGKILL");
	$node->stop('immediate');
	$node->start;

	ok(CacheSync::WriteBack::wait_applied($node, 'acc', $end), "$what: every entry applied in the end");
	is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM audit'),
		join('|', $n + 1, $n + 1, 1, $n + 1), "$what: each entry was applied exactly once");
	is($node->safe_psql('postgres', 'SELECT string_agg(id || \'=\' || seq, \',\' ORDER BY id) FROM acc'),
		join(',', map { "$_=$last{$_}" } sort { $a <=> $b } keys %last), "$what: the table holds the last write per key");
	is($redis->cli('XLEN', "$stream:dlq"), '0', "$what: nothing was dead-lettered");
	is($redis->cli('XLEN', $stream), '0', "$what: the stream is trimmed");
	is($redis->cli('XPENDING', $stream, 'cachesync', '-', '+', '10'), '', "$what: nothing is pending");
	ok(CacheSync::WriteBack::wait_for(sub {
		my $d = CacheSync::Redis::cache_diff($node, 'acc');
		$d->{missing} + $d->{stale} + $d->{orphaned} == 0 }), "$what: the cache equals the table");
}

crash_run('collapsed');

# the same with collapsing off: every entry through the per-entry path
# (also the collapsed path's fallback)
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET cachesync.writeback_collapse = off;
	SELECT pg_reload_conf();
	TRUNCATE audit, acc;
});
crash_run('entry by entry');

# A table without triggers: its batches commit without waiting for the WAL
# flush, and their entries must not be acknowledged before it.  The
# walwriter is stopped, so that the WAL of the last commits stays in
# Postgres's buffers; then the worker is SIGKILLed, which loses those
# commits.  Acknowledged entries are never read again: had the worker
# acknowledged them, their rows would be missing.  (A slow CHECK of
# built-in functions paces the apply: a trigger or a user function would
# make the batches commit synchronously.)
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET cachesync.writeback_collapse;
	SELECT pg_reload_conf();
	CREATE TABLE nolose (id int PRIMARY KEY,
	                     seq int NOT NULL CHECK (pg_sleep(0.0003)::text = ''));
	SELECT cachesync.register('nolose', mode => 'write_back');
});
{
	my $s = 'public.nolose:__writeback';
	my $n = 12000;
	CacheSync::WriteBack::wait_for(sub {
		$redis->cli('HEXISTS', '__cachesync:writeback', $s) eq '1' });
	CacheSync::WriteBack::pipe_commands($redis,
		map { [ 'FCALL', 'cachesync_upsert', '2', "public.nolose:$_", $s, qq({"id":$_,"seq":$_}) ] }
		  1 .. $n);
	my $end = ($redis->cli('XREVRANGE', $s, '+', '-', 'COUNT', '1') =~ /^(\d+-\d+)/)[0];
	ok($node->poll_query_until('postgres', 'SELECT count(*) > 500 FROM nolose'), 'no trigger: applying');
	my $walwriter = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'");
	kill 'STOP', $walwriter;
	my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM nolose');
	ok($node->poll_query_until('postgres', "SELECT count(*) > $before + 1500 FROM nolose"),
		'no trigger: applying with the walwriter stopped');
	# batches commit without flushing the WAL: two batches (200 entries
	# each) commit while the flush position stays put (a few tries: the
	# worker flushes at the end of each stream's turn)
	my $unflushed = 0;
	for my $try (1 .. 5)
	{
		my ($flush, $count) = split /\|/, $node->safe_psql('postgres',
			'SELECT pg_current_wal_flush_lsn(), count(*) FROM nolose');
		$node->poll_query_until('postgres', 'SELECT count(*) >= ' . ($count + 400) . ' FROM nolose');
		if ($node->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()') eq $flush)
		{
			$unflushed = 1;
			last;
		}
	}
	ok($unflushed, 'no trigger: batches commit without waiting for the WAL flush');
	my $acked = $n - $redis->cli('XLEN', $s);
	kill 'KILL', CacheSync::WriteBack::worker_pid($node);
	# resumed only once the postmaster's SIGQUIT waits for it (it exits at
	# once then, without writing the WAL)
	ok(CacheSync::WriteBack::wait_for(sub {
		my $st = PostgreSQL::Test::Utils::slurp_file("/proc/$walwriter/status");
		my ($sig, $shd) = $st =~ /^SigPnd:\s*(\w+).*^ShdPnd:\s*(\w+)/ms;
		(hex($sig) | hex($shd)) & 4 }), 'no trigger: the crash restart signalled the stopped walwriter');
	kill 'CONT', $walwriter;
	$node->poll_query_until('postgres', 'SELECT true') or die 'node did not come back';
	note("acknowledged when killed: $acked");
	ok(CacheSync::WriteBack::wait_applied($node, 'nolose', $end), 'no trigger: every entry applied in the end');
	is($node->safe_psql('postgres', 'SELECT count(*), count(*) FILTER (WHERE seq = id) FROM nolose'),
		"$n|$n", 'no trigger: no acknowledged entry was lost with the commits the crash lost');
	ok(CacheSync::WriteBack::wait_for(sub { $redis->cli('XLEN', $s) eq '0' }), 'no trigger: the stream is trimmed');
	is($redis->cli('XPENDING', $s, 'cachesync', '-', '+', '10'), '', 'no trigger: nothing is pending');
}

# entries at or before the stored progress are acknowledged, not applied
# again (the worker crashed after the commit, before XACK)
$node->safe_psql('postgres', q{
	CREATE TABLE skip (id int PRIMARY KEY, v text);
	INSERT INTO cachesync.writeback_progress VALUES ('skip', '99999999999999-0');
	SELECT cachesync.register('skip', mode => 'write_back');
});
CacheSync::WriteBack::wait_for(sub {
	$redis->cli('HEXISTS', '__cachesync:writeback', 'public.skip:__writeback') eq '1' });
$redis->cli('FCALL', 'cachesync_upsert', '2', 'public.skip:1', 'public.skip:__writeback', '{"id":1,"v":"x"}');
ok(CacheSync::WriteBack::wait_for(sub { $redis->cli('XLEN', 'public.skip:__writeback') eq '0' }),
	'an entry before the progress is acknowledged and trimmed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM skip'), '0', 'and not applied');

done_testing();
