
# Bad write-back entries go to the dead-letter stream with their original
# fields, the error and its SQLSTATE, are acknowledged, and never stop the
# good entries after them; a dead letter is written once per entry; after
# the cause is fixed, replay applies them.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CacheSync::Redis;
use CacheSync::WriteBack;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('wbdlq', $redis);

$node->safe_psql('postgres', q{
	CREATE TABLE dl (id int PRIMARY KEY, n int CONSTRAINT n_positive CHECK (n >= 0),
	                 t text NOT NULL DEFAULT 'x');
	SELECT cachesync.register('dl', mode => 'write_back');
});
my $s = 'public.dl:__writeback';
CacheSync::WriteBack::worker_pid($node);
CacheSync::WriteBack::wait_for(sub { $redis->cli('HEXISTS', '__cachesync:writeback', $s) eq '1' });

# each bad entry is followed by a good one
my @bad = (
	[ 'malformed JSON',      '22P02', [ 'op', 'upsert', 'data', '{"id":' ] ],
	[ 'unknown column',      '42703', [ 'op', 'upsert', 'data', '{"id":2,"nope":1}' ] ],
	[ 'wrong type',          '22P02', [ 'op', 'upsert', 'data', '{"id":3,"n":"abc"}' ] ],
	[ 'missing key column',  '23502', [ 'op', 'upsert', 'data', '{"n":1}' ] ],
	[ 'null key value',      '23502', [ 'op', 'delete', 'data', '{"id":null}' ] ],
	[ 'check violation',     '23514', [ 'op', 'upsert', 'data', '{"id":5,"n":-1}' ] ],
	[ 'not-null violation',  '23502', [ 'op', 'upsert', 'data', '{"id":6,"t":null}' ] ],
	[ 'unknown op',          '22023', [ 'op', 'merge', 'data', '{"id":7}' ] ],
	[ 'no op field',         '22023', [ 'data', '{"id":8}' ] ],
	[ 'data not an object',  '22023', [ 'op', 'upsert', 'data', '[1,2]' ] ],
);
my $i = 0;
for my $b (@bad)
{
	$redis->cli('XADD', $s, '*', @{ $b->[2] });
	$redis->cli('FCALL', 'cachesync_upsert', '2', "public.dl:10$i", $s, qq({"id":10$i,"n":$i}));
	$i++;
}
# a key that does not match the data, through the function: its cached
# value is put back to what Postgres holds (no row: no key)
$redis->cli('FCALL', 'cachesync_upsert', '2', 'public.dl:77', $s, '{"id":78,"n":1}');
my $last = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.dl:200', $s, '{"id":200,"n":200}');

ok(CacheSync::WriteBack::wait_applied($node, 'dl', $last), 'the stream is applied past every bad entry');
is($node->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM dl'),
	'100,101,102,103,104,105,106,107,108,109,200', 'every good entry was applied');
my $letters = $node->safe_psql('postgres',
	q{SELECT string_agg(sqlstate, ',' ORDER BY id COLLATE "C") FROM cachesync.dead_letters('dl')});
is($letters, join(',', (map { $_->[1] } @bad), '22023'), 'each bad entry is a dead letter with its SQLSTATE');
is($node->safe_psql('postgres',
	q{SELECT error FROM cachesync.dead_letters('dl') WHERE data = '{"id":2,"nope":1}'}),
	'column "nope" of relation "dl" does not exist', 'with the error message');
is($node->safe_psql('postgres',
	q{SELECT op || ' ' || data || ' ' || key FROM cachesync.dead_letters('dl') WHERE sqlstate = '22023' AND key IS NOT NULL}),
	'upsert {"id":78,"n":1} public.dl:77', 'and the original fields');
is($redis->cli('XLEN', $s), '0', 'dead-lettered entries are acknowledged and trimmed too');
ok(CacheSync::WriteBack::wait_for(sub { $redis->cli('EXISTS', 'public.dl:77') eq '0' }),
	'the cached value of a dead-lettered upsert is put back to what Postgres holds');
is($node->safe_psql('postgres',
	"SELECT wb_applied, wb_dead_lettered, last_error IS NOT NULL FROM cachesync.stats WHERE rel = 'dl'::regclass"),
	'11|11|t', 'stats count applied and dead-lettered entries and keep the last error');

# a dead-lettered upsert of an existing row: the cache goes back to the row
$last = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.dl:100', $s, '{"id":100,"n":-5}');
ok(CacheSync::WriteBack::wait_applied($node, 'dl', $last), 'a refused upsert of an existing row');
ok(CacheSync::WriteBack::wait_for(sub { ($redis->cli('GET', 'public.dl:100') // '') eq '{"id":100,"n":0,"t":"x"}' }),
	'its cached value is settled back to the committed row');

# the settle comes before the ack: a failed settle (here: the row's guard
# is not a string) leaves the entry pending; it is re-read, skipped as
# applied, and settled once the settle can succeed
$redis->cli('HSET', '__cachesync:wbid:public.dl:300', 'x', 'y');
$last = $redis->cli('XADD', $s, '*', 'op', 'upsert', 'data', '{"id":300,"n":3}', 'key', 'public.dl:300');
ok(CacheSync::WriteBack::wait_applied($node, 'dl', $last), 'the entry is applied');
ok(CacheSync::WriteBack::wait_for(sub {
	slurp_file($node->logfile) =~ /settling the cache after write-back failed/ }), 'its settle fails');
is($redis->cli('XLEN', $s), '1', 'the entry is not acknowledged before its settle');
$redis->cli('DEL', '__cachesync:wbid:public.dl:300');
ok(CacheSync::WriteBack::wait_for(sub { $redis->cli('XLEN', $s) eq '0' }), 'then it is acknowledged');
is($redis->cli('GET', 'public.dl:300'), '{"id":300,"n":3,"t":"x"}', 'after the skip path settled it');
is($node->safe_psql('postgres', 'SELECT count(*) FROM dl WHERE id = 300'), '1', 'applied once');

# a dead letter is written once per entry, even when written again after a crash
$redis->cli('FCALL', 'cachesync_deadletter', '1', 'dup:dlq', '5-5', 'op', 'x', 'id', '5-5');
$redis->cli('FCALL', 'cachesync_deadletter', '1', 'dup:dlq', '5-5', 'op', 'x', 'id', '5-5');
is($redis->cli('XLEN', 'dup:dlq'), '1', 'writing a dead letter twice keeps one');

# fix two causes, then replay everything: those two apply, the rest comes back
$node->safe_psql('postgres', 'ALTER TABLE dl ADD COLUMN nope int; ALTER TABLE dl DROP CONSTRAINT n_positive');
is($node->safe_psql('postgres', "SELECT cachesync.replay_dead_letters('dl')"), '12', 'replay re-appends every dead letter');
ok(CacheSync::WriteBack::wait_for(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM dl WHERE id IN (2, 5)") eq '2' }),
	'the entries whose cause was fixed are applied');
ok(CacheSync::WriteBack::wait_for(sub { $redis->cli('XLEN', "$s:dlq") eq '9' }),
	'the others are dead letters again');
is($node->safe_psql('postgres', 'SELECT nope, n FROM dl WHERE id IN (2, 5) ORDER BY id'), "1|\n|-1",
	'with their data');
my $one = $node->safe_psql('postgres',
	q{SELECT id FROM cachesync.dead_letters('dl') WHERE sqlstate = '22P02' ORDER BY id LIMIT 1});
is($node->safe_psql('postgres', "SELECT cachesync.replay_dead_letters('dl', ARRAY['$one'])"), '1',
	'one dead letter can be replayed by id');

# transient errors (here a serialization failure, the first time only: a
# sequence is not rolled back) are retried with the batch, never
# dead-lettered
$node->safe_psql('postgres', q{
	CREATE SEQUENCE tr_tries;
	CREATE TABLE tr (id int PRIMARY KEY);
	CREATE FUNCTION tr_fail() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN IF nextval('tr_tries') = 1 THEN
	    RAISE EXCEPTION 'try again' USING ERRCODE = '40001'; END IF; RETURN NEW; END$$;
	CREATE TRIGGER tr_fail BEFORE INSERT ON tr FOR EACH ROW EXECUTE FUNCTION tr_fail();
	SET client_min_messages = warning;
	SELECT cachesync.register('tr', mode => 'write_back');
});
$last = $redis->cli('XADD', 'public.tr:__writeback', '*', 'op', 'upsert', 'data', '{"id":1}');
ok(CacheSync::WriteBack::wait_applied($node, 'tr', $last), 'an entry failing with 40001 once is applied');
is($node->safe_psql('postgres', "SELECT (SELECT count(*) FROM tr) || '|' || (SELECT count(*) FROM cachesync.dead_letters('tr'))"),
	'1|0', 'retried, not dead-lettered');

# deferred constraints are checked per entry: a violation dead-letters
# that entry alone instead of failing the batch at COMMIT
$node->safe_psql('postgres', q{
	CREATE TABLE par (id int PRIMARY KEY);
	INSERT INTO par VALUES (1);
	CREATE TABLE ch (id int PRIMARY KEY,
	                 p int REFERENCES par DEFERRABLE INITIALLY DEFERRED);
	SET client_min_messages = warning;
	SELECT cachesync.register('ch', mode => 'write_back');
});
CacheSync::WriteBack::pipe_commands($redis,
	[ 'XADD', 'public.ch:__writeback', '*', 'op', 'upsert', 'data', '{"id":1,"p":1}' ],
	[ 'XADD', 'public.ch:__writeback', '*', 'op', 'upsert', 'data', '{"id":2,"p":99}' ],
	[ 'XADD', 'public.ch:__writeback', '*', 'op', 'upsert', 'data', '{"id":3,"p":1}' ]);
$last = $redis->cli('XADD', 'public.ch:__writeback', '*', 'op', 'upsert', 'data', '{"id":4,"p":1}');
ok(CacheSync::WriteBack::wait_applied($node, 'ch', $last), 'a batch with a deferred FK violation commits');
is($node->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM ch'), '1,3,4',
	'the other entries are applied');
is($node->safe_psql('postgres', q{SELECT data || ' ' || sqlstate FROM cachesync.dead_letters('ch')}),
	'{"id":2,"p":99} 23503', 'the violating entry is dead-lettered');

# columns left out of the cache cannot be written back
$node->safe_psql('postgres', q{
	CREATE TABLE sec (id int PRIMARY KEY, name text, secret text);
	SET client_min_messages = warning;
	SELECT cachesync.register('sec', mode => 'write_back', columns => ARRAY['name']);
});
$redis->cli('XADD', 'public.sec:__writeback', '*', 'op', 'upsert', 'data', '{"id":1,"name":"n","secret":"s"}');
$last = $redis->cli('XADD', 'public.sec:__writeback', '*', 'op', 'upsert', 'data', '{"id":2,"name":"m"}');
ok(CacheSync::WriteBack::wait_applied($node, 'sec', $last), 'entries of a table with uncached columns');
is($node->safe_psql('postgres', 'SELECT string_agg(id || name || coalesce(secret, \'-\'), \',\' ORDER BY id) FROM sec'),
	'2m-', 'an entry writing an uncached column is not applied');
is($node->safe_psql('postgres', q{SELECT sqlstate || ' ' || error FROM cachesync.dead_letters('sec')}),
	'42501 column "secret" of relation "sec" is not cached and cannot be written back',
	'it is dead-lettered with 42501');

# one stream that cannot be read (its key holds a string) is skipped alone
$node->safe_psql('postgres', q{CREATE TABLE bad (id int PRIMARY KEY)});
$redis->cli('SET', 'public.bad:__writeback', 'not a stream');
$node->safe_psql('postgres', q{SET client_min_messages = warning; SELECT cachesync.register('bad', mode => 'write_back')});
ok(CacheSync::WriteBack::wait_for(sub {
	slurp_file($node->logfile) =~ /cannot read write-back stream "public.bad:__writeback"/ }),
	'a stream whose group cannot be created is logged');
$last = $redis->cli('XADD', 'public.dl:__writeback', '*', 'op', 'upsert', 'data', '{"id":400}');
ok(CacheSync::WriteBack::wait_applied($node, 'dl', $last), 'the other streams are still applied');

done_testing();
