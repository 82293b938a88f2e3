# The worker reads the change outbox once per batch it ships.  Every read is
# a scan of the whole outbox, the entries it deleted included until a
# vacuum, so after a short batch the worker waits for the next commit's note
# instead of reading again to find the outbox empty (that second read was
# half of the worker's CPU under a write load).
#
# Counted with pg_stat_all_tables.seq_scan of cachesync.changes_outbox: the
# worker publishes its table statistics while it runs, as a backend does
# when it goes idle (before, they appeared only when it exited, and
# autovacuum never counted the rows it deleted).  Each commit below is
# shipped before the next one is made, so each needs a read of its own; the
# worker also rereads the outbox about once a second without a reason, which
# the bound allows for by the elapsed time.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use POSIX qw(ceil);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new;
my $node = CacheSync::Redis::new_node('changes_reads', $redis);
my $stream = 'public.e:__changes';

$node->safe_psql('postgres', q{
	CREATE TABLE e (id int PRIMARY KEY, v int NOT NULL);
	SELECT cachesync.register('e', changes => true);
	INSERT INTO e VALUES (1, 0);
});

# Waits up to 30 s until the stream holds $n entries; returns whether it did.
sub wait_xlen
{
	my ($n) = @_;
	my $deadline = time + 30;
	while (time < $deadline)
	{
		return 1 if ($redis->cli('XLEN', $stream) // 0) >= $n;
		usleep(5_000);
	}
	return 0;
}

sub outbox_scans
{
	return $node->safe_psql('postgres',
		"SELECT seq_scan FROM pg_stat_all_tables WHERE relid = 'cachesync.changes_outbox'::regclass");
}

ok(wait_xlen(1), 'the insert reaches the stream');

# the worker's statistics show while it runs
my $deadline = time + 30;
usleep(100_000) while (outbox_scans() == 0 && time < $deadline);
cmp_ok(outbox_scans(), '>', 0, "the worker's reads of the outbox show in pg_stat_all_tables");

my $k = 40;
my $start = time;
my $before = outbox_scans();
for my $i (1 .. $k)
{
	$node->safe_psql('postgres', 'UPDATE e SET v = v + 1 WHERE id = 1');
	wait_xlen($i + 1) or last;
}
is($redis->cli('XLEN', $stream), $k + 1, "$k separate commits reach the stream one by one");
# the worker publishes its statistics at most once a second
sleep(3);
my $reads = outbox_scans() - $before;
my $elapsed = ceil(time - $start);
note("$reads outbox reads for $k shipped commits in $elapsed s");
# one read per commit, one a second without a reason, slack for the
# statistics published late at $before; the old worker read twice per batch
cmp_ok($reads, '<=', $k + $elapsed + 4, 'one read of the outbox per shipped batch, not two');
cmp_ok($reads, '>=', $k / 2, 'the reads are counted');

done_testing();
