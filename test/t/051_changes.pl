# Change stream (register's changes): every committed change reaches the
# table's stream, in commit order per key, across a Redis outage
# (on_redis_error = queue) and a Postgres crash in the middle of a load;
# duplicates carry the same pos; rolled-back work never appears; the
# stream stays near cachesync.changes_maxlen.
#
# The load increments v of a few hot keys concurrently (v = v + 1 under the
# row lock), so per key the stream, duplicates dropped by pos, must read
# v = 0, 1, 2, ... up to the row's value: a lost, reordered or rolled-back
# change breaks that sequence.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

# persisted, so the stream survives the Redis restart of the outage
my $redis = CacheSync::Redis->new('--appendonly', 'yes', '--appendfsync', 'always');
my $node = CacheSync::Redis::new_node('changes', $redis,
	"cachesync.connect_timeout = '300ms'",
	"cachesync.command_timeout = '300ms'",
	"cachesync.changes_maxlen = 1000000");

$node->safe_psql('postgres', q{
	CREATE TABLE c (id int PRIMARY KEY, v int NOT NULL);
	SELECT cachesync.register('c', changes => true);
	INSERT INTO c SELECT g, 0 FROM generate_series(1, 5) g;
});
my $stream = $node->safe_psql('postgres', "SELECT change_stream FROM cachesync.tables WHERE rel = 'c'::regclass");
is($stream, 'public.c:__changes', 'the change stream is named under the table prefix');

my $script = $node->basedir . '/increment.sql';
PostgreSQL::Test::Utils::append_to_file($script,
	"\\set id random(1, 5)\nUPDATE c SET v = v + 1 WHERE id = :id;\n");

# pgbench increments against the node; returns its IPC::Run handle.
sub load
{
	my ($clients, $tx, $background) = @_;
	my @cmd = ('pgbench', '-n', '-h', $node->host, '-p', $node->port,
		'-c', $clients, '-j', $clients, '-t', $tx, '-f', $script, 'postgres');
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	return $h if $background;
	$h->finish;
	return $h;
}

sub total
{
	return $node->safe_psql('postgres', 'SELECT sum(v) FROM c');
}

# concurrent increments
load(4, 150);
is(total(), 600, 'the load committed');

# rolled-back work, savepoints included
$node->safe_psql('postgres', q{
	BEGIN;
	UPDATE c SET v = v + 1000000 WHERE id = 1;
	ROLLBACK;
	BEGIN;
	UPDATE c SET v = v + 1 WHERE id = 2;
	SAVEPOINT s;
	UPDATE c SET v = v + 1000000 WHERE id = 2;
	UPDATE c SET v = v + 1000000 WHERE id = 3;
	ROLLBACK TO SAVEPOINT s;
	COMMIT;
});

# a Redis outage: writers commit, the outbox holds their changes
$redis->stop;
load(2, 30);
is(total(), 661, 'writes commit while Redis is down');
ok($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM cachesync.changes_outbox') eq 't',
	'the outbox holds the changes while Redis is down');
$redis->start;

# a Postgres crash in the middle of a load
my $h = load(4, 100000, 1);
ok($node->poll_query_until('postgres', 'SELECT sum(v) >= 900 FROM c'), 'the load is running');
$node->stop('immediate');
eval { $h->finish; };
$node->start;

ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cachesync.changes_outbox'),
	'the outbox drains');

# the stream as rows: stream order, op, key, pos, v
$node->safe_psql('postgres', qq{
	CREATE TABLE s AS
	SELECT ord, o->>'op' AS op, o->>'key' AS key, (o->>'pos')::bigint AS pos,
	       o->>'row' AS r, ((o->>'row')::jsonb->>'v')::int AS v
	  FROM (SELECT ord, jsonb_object(ARRAY(SELECT json_array_elements_text(x->1))) AS o
	          FROM json_array_elements(cachesync.redis_command('XRANGE', '$stream', '-', '+')::json)
	               WITH ORDINALITY AS t(x, ord)) q;
	-- what a consumer keeps: the first entry of each pos
	CREATE TABLE f AS SELECT DISTINCT ON (pos) * FROM s ORDER BY pos, ord;
});
my ($entries, $unique) = split /\|/,
  $node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT pos) FROM s');
note("stream: $entries entries, $unique distinct positions");
is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT pos FROM s GROUP BY pos HAVING count(DISTINCT (op, key, r)) > 1) d'),
	0, 'duplicates carry the same content');
is($node->safe_psql('postgres', 'SELECT count(*) FROM s WHERE v >= 1000000'),
	0, 'rolled-back changes never appear');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (
	  SELECT v, row_number() OVER w - 1 AS i, pos, lag(pos) OVER w AS prev, op
	    FROM f WINDOW w AS (PARTITION BY key ORDER BY ord)) x
	 WHERE v <> i OR pos <= prev OR op <> CASE WHEN i = 0 THEN 'insert' ELSE 'update' END}),
	0, 'per key, the stream reads every committed value in commit order, pos rising');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM c
	 WHERE v + 1 <> (SELECT count(*) FROM f WHERE f.key = cachesync.key('c', c.id::text))
	    OR v <> (SELECT v FROM f WHERE f.key = cachesync.key('c', c.id::text) ORDER BY ord DESC LIMIT 1)}),
	0, 'per key, the last entry equals the row and none is missing');
cmp_ok($node->safe_psql('postgres', "SELECT changes_appended FROM cachesync.stats WHERE rel = 'c'::regclass"),
	'>', 0, 'cachesync.stats counts appended entries');

# the cap: XADD MAXLEN ~ keeps the stream near the setting
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET cachesync.changes_maxlen = 100;
	CREATE TABLE capped (id int PRIMARY KEY);
	SELECT cachesync.register('capped', changes => true);
});
$node->restart;
$node->safe_psql('postgres', 'INSERT INTO capped SELECT generate_series(1, 3000)');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cachesync.changes_outbox'),
	'the capped outbox drains');
my $xlen = $redis->cli('XLEN', 'public.capped:__changes');
ok($xlen >= 100 && $xlen <= 300, "the stream stays near the cap (XLEN $xlen, cap 100, 3000 appended)");
is($redis->cli('XREVRANGE', 'public.capped:__changes', '+', '-', 'COUNT', '1') =~ /"id":3000/ ? 1 : 0,
	1, 'the newest entry is kept');

done_testing();
