# Invalidation broadcast (register's notify): a subscriber receives exactly
# the keys of committed changes, on the table's channel and on the channel
# of all tables, for write_through (published after commit without waiting),
# write_around (with the post-commit deletes) and async (by the worker when
# it ships).  Rolled-back transactions and savepoints never publish.  A
# write_through change that met a Redis outage is published by the worker
# once it ships the queue.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('notify', $redis,
	"cachesync.connect_timeout = '300ms'",
	"cachesync.command_timeout = '300ms'");

$node->safe_psql('postgres', q{
	CREATE TABLE wt (id int PRIMARY KEY, v text);
	CREATE TABLE wa (id int PRIMARY KEY, v text);
	CREATE TABLE aa (id int PRIMARY KEY, v text);
	CREATE TABLE tt (id int PRIMARY KEY, v text);
	CREATE TABLE quiet (id int PRIMARY KEY, v text);
	SELECT cachesync.register('wt', notify => true);
	SELECT cachesync.register('wa', mode => 'write_around', notify => true);
	SELECT cachesync.register('aa', mode => 'async', notify => true);
	SELECT cachesync.register('tt', notify => true);
	SELECT cachesync.register('quiet');
	INSERT INTO tt VALUES (1, 'x');
});

my ($all, $wt_channel) = split /\|/, $node->safe_psql('postgres',
	"SELECT invalidate_all_channel, invalidate_channel FROM cachesync.tables WHERE rel = 'wt'::regclass");
is($all, '__cachesync:invalidate', 'the all-tables channel');
is($wt_channel, '__cachesync:invalidate:public.wt', 'the table channel');

# Starts a redis-cli subscriber on both channels; returns its handle and
# output buffer once Redis counts it as subscribed.
sub subscribe
{
	my $out = '';
	my $h = IPC::Run::start(
		[ 'redis-cli', '-h', '127.0.0.1', '-p', $redis->port, 'SUBSCRIBE', $all, $wt_channel ],
		'<', \undef, '>', \$out, '2>', \my $err);
	my $deadline = time() + 30;
	while (time() < $deadline)
	{
		last if $redis->cli('PUBSUB', 'NUMSUB', $wt_channel) =~ /\n1$/;
		usleep(20_000);
	}
	return ($h, \$out);
}

# Returns [channel, message] pairs seen so far in a subscriber's output.
sub messages
{
	my ($h, $out) = @_;
	$h->pump_nb;
	my @l = split /\n/, $$out, -1;
	my @m;
	for (my $i = 0; $i + 2 < @l; $i++)
	{
		next unless $l[$i] eq 'message';
		push @m, [ $l[ $i + 1 ], $l[ $i + 2 ] ];
		$i += 2;
	}
	return @m;
}

# Waits until every key of @want was published on the all-tables channel.
sub wait_for
{
	my ($h, $out, @want) = @_;
	my $deadline = time() + 60;
	my %got;
	while (time() < $deadline)
	{
		%got = map { $_->[1] => 1 } grep { $_->[0] eq $all } messages($h, $out);
		return 1 unless grep { !$got{$_} } @want;
		usleep(20_000);
	}
	diag("still missing: " . join(' ', grep { !$got{$_} } @want));
	return 0;
}

my ($h, $out) = subscribe();

$node->safe_psql('postgres', q{
	-- committed
	INSERT INTO wt VALUES (1, 'a'), (2, 'b');
	UPDATE wt SET v = 'c' WHERE id = 1;
	DELETE FROM wt WHERE id = 2;
	INSERT INTO wa VALUES (1, 'a');
	UPDATE wa SET v = 'b' WHERE id = 1;
	INSERT INTO aa VALUES (1, 'a');
	-- a change of a table without notify
	INSERT INTO quiet VALUES (1, 'q');
	-- rolled back
	BEGIN;
	INSERT INTO wt VALUES (10, 'x');
	INSERT INTO wa VALUES (10, 'x');
	INSERT INTO aa VALUES (10, 'x');
	TRUNCATE tt;
	ROLLBACK;
	-- rolled back to a savepoint: only the rest commits
	BEGIN;
	INSERT INTO wt VALUES (12, 'kept');
	INSERT INTO wa VALUES (12, 'kept');
	INSERT INTO aa VALUES (12, 'kept');
	SAVEPOINT s;
	INSERT INTO wt VALUES (11, 'x');
	INSERT INTO wa VALUES (11, 'x');
	INSERT INTO aa VALUES (11, 'x');
	ROLLBACK TO SAVEPOINT s;
	COMMIT;
	-- TRUNCATE: the table's key prefix, meaning every key
	TRUNCATE tt;
});
# a failed transaction
my ($rc) = $node->psql('postgres', q{
	BEGIN;
	INSERT INTO wt VALUES (13, 'x');
	INSERT INTO wt VALUES (13, 'duplicate');
	COMMIT;
});
isnt($rc, 0, 'the failing transaction fails');
# markers last
$node->safe_psql('postgres', q{
	INSERT INTO wt VALUES (999, 'm');
	INSERT INTO wa VALUES (999, 'm');
	INSERT INTO aa VALUES (999, 'm');
});

my @expected = (
	'public.wt:1', 'public.wt:2', 'public.wt:1', 'public.wt:2', 'public.wt:12', 'public.wt:999',
	'public.wa:1', 'public.wa:1', 'public.wa:12', 'public.wa:999',
	'public.aa:1', 'public.aa:12', 'public.aa:999',
	'public.tt:');
ok(wait_for($h, $out, @expected), 'every committed key arrives');
usleep(300_000);	# let strays arrive
my @m = messages($h, $out);
my @on_all = sort map { $_->[1] } grep { $_->[0] eq $all } @m;
is_deeply(\@on_all, [ sort @expected ],
	'the all-tables channel carries exactly the committed keys, once per committed change');
my @on_wt = sort map { $_->[1] } grep { $_->[0] eq $wt_channel } @m;
is_deeply(\@on_wt, [ sort grep { /^public\.wt:/ } @expected ],
	'the table channel carries exactly its table\'s keys');
ok(!(grep { $_->[1] =~ /:(10|11|13)$/ } @m), 'rolled-back keys never appear');

my $stats = $node->safe_psql('postgres',
	"SELECT rel, published, publish_lost FROM cachesync.stats WHERE rel::text IN ('wt', 'wa', 'aa', 'quiet') ORDER BY rel::text");
is($stats, "aa|6|0\nquiet|0|0\nwa|8|0\nwt|12|0", 'published counts two messages per key');

# A Redis outage: the write_through change is queued at commit and
# published by the worker once Redis is back.
$h->kill_kill;
$redis->stop;
$node->safe_psql('postgres', "UPDATE wt SET v = 'during outage' WHERE id = 1");
$redis->start;
($h, $out) = subscribe();
ok(wait_for($h, $out, 'public.wt:1'), 'a change queued during an outage is published when shipped');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cachesync.queue'), 'the queue drains');
$h->kill_kill;

done_testing();
