# Hot keys: skewed read traffic through cachesync.get() is counted per key;
# when Redis comes back empty the worker warms each table's hottest keys
# (a write_around table, so nothing else could bring them back), and the
# counts survive a Postgres restart.  With Redis down, get() still answers
# from the table.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('hot', $redis,
	'cachesync.hot_keys = 50', 'cachesync.warmup_keys = 10',
	'cachesync.hot_keys_tables = 2');

$node->safe_psql('postgres', q{
	CREATE TABLE hot (id int PRIMARY KEY, v text);
	INSERT INTO hot SELECT g, 'row ' || g FROM generate_series(1, 500) g;
	SELECT cachesync.register('hot', mode => 'write_around');
});

# skewed traffic: keys 1..10 twenty times each, 190 others once
$node->safe_psql('postgres', q{
	SELECT count(cachesync.get('hot', g::text)) FROM generate_series(11, 200) g;
	SELECT count(cachesync.get('hot', g::text)) FROM generate_series(1, 10) g, generate_series(1, 20);
});

my $top = q{SELECT string_agg(key, ',' ORDER BY key) FROM
	(SELECT key FROM cachesync.hot_keys WHERE rel = 'hot'::regclass ORDER BY hits DESC LIMIT 10) t};
my $expected = join(',', sort map { "public.hot:$_" } 1 .. 10);
is($node->safe_psql('postgres', $top), $expected, 'the ten hot keys are the top ten');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cachesync.hot_keys WHERE rel = 'hot'::regclass}),
	'50', 'the counters are bounded by cachesync.hot_keys');

# Returns the row keys of table hot in Redis, sorted.
sub cached_keys
{
	my $out = $redis->cli('--no-raw', 'KEYS', 'public.hot:*');
	my @k = sort map { /"(.*)"/ ? $1 : () } split /\n/, $out;
	return join(',', @k);
}

# Flushes Redis and waits until the worker put the hot keys back.
sub flush_and_wait
{
	my ($what) = @_;
	$redis->cli('FLUSHALL');
	my $t0 = time();
	while (time() - $t0 < 30 && cached_keys() ne $expected) { usleep(50_000); }
	is(cached_keys(), $expected, "$what: the worker restored exactly the hot keys");
	is($redis->cli('GET', 'public.hot:3'), '{"id":3,"v":"row 3"}', "$what: with their rows");
}

is(cached_keys() =~ tr/,// + 1, 200, 'every key read was cached');
flush_and_wait('after FLUSHALL');
ok($node->log_contains('warmed 10 hot keys of 1 tables'), 'the worker logged the warm-up');

# reads after the warm-up are hits
my $hits = $node->safe_psql('postgres', q{SELECT hits FROM cachesync.stats WHERE rel = 'hot'::regclass});
$node->safe_psql('postgres', q{SELECT cachesync.get('hot', '1')});
is($node->safe_psql('postgres', q{SELECT hits FROM cachesync.stats WHERE rel = 'hot'::regclass}),
	$hits + 1, 'a warmed key is a hit');

# across a Postgres restart: the counts come back from the file (the reads
# just before the restart are there too: the postmaster writes the file at
# shutdown, while the worker writes it at most every 10 s)
$node->safe_psql('postgres', q{SELECT count(cachesync.get('hot', '2')) FROM generate_series(1, 7)});
my $hits_of = q{SELECT hits FROM cachesync.hot_keys WHERE key = 'public.hot:2'};
my $before = $node->safe_psql('postgres', $hits_of);
$node->restart;
is($node->safe_psql('postgres', $top), $expected, 'after a restart the hot keys are known');
is($node->safe_psql('postgres', $hits_of), $before, 'with the counts of the last reads');
flush_and_wait('after a restart and FLUSHALL');

# Redis down: get() and get_many() answer from the table
$redis->stop;
is($node->safe_psql('postgres', q{SELECT cachesync.get('hot', '42')->>'v'}), 'row 42',
	'Redis down: get() answers from the table');
is($node->safe_psql('postgres', q{SELECT string_agg(value->>'v', ',' ORDER BY key)
	FROM cachesync.get_many('hot', ARRAY['7', '8'])}), 'row 7,row 8',
	'Redis down: get_many() answers from the table');
is($node->safe_psql('postgres', q{SELECT cachesync.get('hot', '9999') IS NULL}), 't',
	'Redis down: an absent row is still NULL');
$redis->start;
flush_and_wait('after Redis came back');

# the table slots are bounded (hot_keys_tables = 2); a dropped table's slot
# is freed for the next table read
$node->safe_psql('postgres', q{
	CREATE TABLE t_a (id int PRIMARY KEY);
	CREATE TABLE t_b (id int PRIMARY KEY);
	SELECT cachesync.register('t_a');
	SELECT cachesync.register('t_b');
	SELECT cachesync.get('t_a', '1');
});
my $tracked = q{SELECT string_agg(DISTINCT relid::regclass::text, ',' ORDER BY relid::regclass::text)
	FROM cachesync._hot_keys()};
$node->safe_psql('postgres', q{SELECT cachesync.get('t_b', '1')});
is($node->safe_psql('postgres', $tracked), 'hot,t_a', 'a third table is not tracked');
$node->safe_psql('postgres', q{DROP TABLE t_a});
$node->safe_psql('postgres', q{SELECT cachesync.get('t_b', '1')});
is($node->safe_psql('postgres', $tracked), 'hot,t_b', 'a dropped table frees its slot');

$node->stop;
done_testing();
