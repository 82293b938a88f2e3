
# Write-back end to end: cachesync_upsert / cachesync_delete change the cache
# and append to the stream atomically; the write-back worker applies entries
# in stream order (10k entries with repeated keys end as the last write per
# key), settles the cache to the row as Postgres stored it (defaults,
# triggers), never over a newer application write, does not echo its own
# changes, and direct SQL writes to a write_back table still reach Redis.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;
use CacheSync::WriteBack;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('wb', $redis, "cachesync.batch_size = 500");

$node->safe_psql('postgres', q{
	CREATE TABLE items (id int PRIMARY KEY, name text, qty int NOT NULL DEFAULT 7,
	                    stamp text, total int GENERATED ALWAYS AS (qty * 10) STORED);
	CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN NEW.stamp := 'by trigger'; IF NEW.name LIKE 'slow%' THEN PERFORM pg_sleep(2); END IF;
	   RETURN NEW; END$$;
	CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION stamp();
	SELECT cachesync.register('items', mode => 'write_back');
});
my $stream = 'public.items:__writeback';
is($node->safe_psql('postgres', "SELECT writeback_stream FROM cachesync.tables"),
	$stream, 'cachesync.tables shows the stream');
my $wpid = CacheSync::WriteBack::worker_pid($node);
ok($wpid > 0, 'the write-back worker runs');

# the worker publishes the metadata the functions need
ok(CacheSync::WriteBack::wait_for(sub {
	$redis->cli('HEXISTS', '__cachesync:writeback', 'public.items:__writeback') eq '1' }),
	'metadata published');

# an upsert: the cache changes at once, the row follows
my $id = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:1', $stream,
	'{"id":1,"name":"one"}');
like($id, qr/^\d+-\d+$/, 'cachesync_upsert returns the entry id');
like($redis->cli('GET', 'public.items:1'), qr/"name":"one"/, 'the cache holds the value at once');
ok(CacheSync::WriteBack::wait_applied($node, 'items', $id), 'the entry is applied');
is($node->safe_psql('postgres', 'SELECT id, name, qty, stamp, total FROM items'),
	'1|one|7|by trigger|70', 'the row has the default and the trigger value');
ok(CacheSync::WriteBack::wait_for(sub { ($redis->cli('GET', 'public.items:1') // '') =~ /by trigger/ }),
	'the cache settles to the row as stored');
is($redis->cli('GET', 'public.items:1'),
	'{"id":1,"name":"one","qty":7,"stamp":"by trigger","total":70}',
	'the cached value is row_to_json of the stored row');
is($redis->cli('XLEN', $stream), '0', 'applied entries are trimmed from the stream');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.queue'), '0',
	'no echo: the applied change was not queued');

# a partial upsert merges into the cached object and updates only its columns
$id = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:1', $stream, '{"id":1,"qty":3}');
like($redis->cli('GET', 'public.items:1'), qr/"name":"one"/, 'a partial upsert keeps the other cached fields');
CacheSync::WriteBack::wait_applied($node, 'items', $id);
is($node->safe_psql('postgres', 'SELECT name, qty, total FROM items WHERE id = 1'), 'one|3|30',
	'a partial upsert changes only the given columns');

# delete
$id = $redis->cli('FCALL', 'cachesync_delete', '2', 'public.items:1', $stream, '{"id":1}');
is($redis->cli('EXISTS', 'public.items:1'), '0', 'cachesync_delete removes the key at once');
CacheSync::WriteBack::wait_applied($node, 'items', $id);
is($node->safe_psql('postgres', 'SELECT count(*) FROM items'), '0', 'the row is deleted');

# argument errors from the functions
like($redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:1', 'public.other:__writeback', '{"id":1}'),
	qr/not the write-back stream/, 'a stream that is not a write_back table\'s is refused');
like($redis->cli('FCALL', 'cachesync_upsert', '2', 'other:1', $stream, '{"id":1}'),
	qr/not under the table prefix/, 'a row key outside the table prefix is refused');
like($redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:1', $stream, '{"id":'),
	qr/must be a JSON object/, 'malformed JSON is refused at the call');
is($redis->cli('XLEN', $stream), '0', 'refused calls append nothing');

# direct SQL writes to a write_back table reach Redis as in write_through
$node->safe_psql('postgres', "INSERT INTO items (id, name) VALUES (2, 'sql')");
is($redis->cli('GET', 'public.items:2'),
	'{"id":2,"name":"sql","qty":7,"stamp":"by trigger","total":70}',
	'a direct SQL insert is in Redis when COMMIT returns');
$node->safe_psql('postgres', "DELETE FROM items WHERE id = 2");
is($redis->cli('EXISTS', 'public.items:2'), '0', 'a direct SQL delete too');

# the settle never overwrites a newer application write: A is applied slowly;
# B for the same key arrives meanwhile; A's settle must leave B's value
my $ida = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:5', $stream,
	'{"id":5,"name":"slow a"}');
usleep(500_000);    # the worker is inside A's apply (2 s)
my $idb = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:5', $stream,
	'{"id":5,"name":"slow b","qty":2}');
CacheSync::WriteBack::wait_applied($node, 'items', $ida);
usleep(500_000);    # A's settle has run; B is being applied (2 s)
is($node->safe_psql('postgres', 'SELECT name FROM items WHERE id = 5'), 'slow a',
	'B is not applied yet');
like($redis->cli('GET', 'public.items:5'), qr/"slow b"/,
	'the settle of A left the newer application value B in place');
CacheSync::WriteBack::wait_applied($node, 'items', $idb);
ok(CacheSync::WriteBack::wait_for(sub { ($redis->cli('GET', 'public.items:5') // '') =~ /by trigger.*total":20/ }),
	'B settles to its stored row');

# 10k entries with repeated keys (upserts and deletes) end as the last write per key
my (@cmds, %expect);
for my $seq (1 .. 10000)
{
	my $k = ($seq * 7919) % 500 + 100;
	if ($seq % 13 == 0)
	{
		push @cmds, [ 'FCALL', 'cachesync_delete', '2', "public.items:$k", $stream, qq({"id":$k}) ];
		delete $expect{$k};
	}
	else
	{
		push @cmds, [ 'FCALL', 'cachesync_upsert', '2', "public.items:$k", $stream,
			qq({"id":$k,"name":"n$seq","qty":$seq}) ];
		$expect{$k} = "$k|n$seq|$seq";
	}
}
my $t0 = time();
CacheSync::WriteBack::pipe_commands($redis, @cmds);
my $last = $redis->cli('FCALL', 'cachesync_upsert', '2', 'public.items:1', $stream, '{"id":1,"name":"end"}');
$expect{1} = '1|end|7';
ok(CacheSync::WriteBack::wait_applied($node, 'items', $last), '10k entries applied');
note(sprintf('10k entries applied in %.1f s', time() - $t0));
$expect{5} = '5|slow b|2';
is($node->safe_psql('postgres', "SELECT id, name, qty FROM items ORDER BY id"),
	join("\n", map { $expect{$_} } sort { $a <=> $b } keys %expect),
	'the table holds the last write per key');
ok(CacheSync::WriteBack::wait_for(sub {
	my $d = CacheSync::Redis::cache_diff($node, 'items');
	$d->{missing} + $d->{stale} + $d->{orphaned} == 0 }), 'the cache equals the table');
is($redis->cli('XLEN', $stream), '0', 'the stream is empty again');
my $stats = $node->safe_psql('postgres',
	"SELECT wb_applied, wb_dead_lettered, wb_pending FROM cachesync.stats WHERE rel = 'items'::regclass");
is($stats, '10006|0|0', 'stats count the applied entries, none pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.queue'), '0', 'nothing was echoed to the queue');

# Appends the upsert of data to public.$table's stream once its metadata is
# published, and waits until the worker applied it.
sub upsert_applied
{
	my ($table, $key, $data) = @_;
	my $s = "public.$table:__writeback";
	CacheSync::WriteBack::wait_for(sub { $redis->cli('HEXISTS', '__cachesync:writeback', $s) eq '1' });
	my $id = $redis->cli('FCALL', 'cachesync_upsert', '2', "public.$table:$key", $s, $data);
	return CacheSync::WriteBack::wait_applied($node, $table, $id);
}

# a write_back table with a change stream: the rows the worker applies are
# changes too (not cache work, but the stream gets them)
$node->safe_psql('postgres', q{
	CREATE TABLE logged (id int PRIMARY KEY, v int);
	SELECT cachesync.register('logged', mode => 'write_back', changes => true);
});
ok(upsert_applied('logged', 1, '{"id":1,"v":5}'), 'the logged entry is applied');
ok(CacheSync::WriteBack::wait_for(sub { $redis->cli('XLEN', 'public.logged:__changes') eq '1' }),
	'the applied row reached the change stream');
like(join(' ', split /\n/, $redis->cli('XRANGE', 'public.logged:__changes', '-', '+')),
	qr/op insert key public\.logged:1 row \{"id":1,"v":5\}/, 'as an insert with the stored row');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.queue'), '0',
	'and still nothing was queued');

# a write_back table whose default calls a function that writes a
# write_through table: that table's change reaches Redis (its capture
# trigger fires: the batch does not run with triggers off), and so does a
# change made through a domain's check
$node->safe_psql('postgres', q{
	CREATE TABLE side (id serial PRIMARY KEY, note text);
	SELECT cachesync.register('side', mode => 'write_through');
	CREATE FUNCTION note_it(t text) RETURNS int LANGUAGE plpgsql AS
	  $$BEGIN INSERT INTO side (note) VALUES (t); RETURN 1; END$$;
	CREATE DOMAIN noted AS int CHECK (note_it('domain') = 1);
	GRANT INSERT ON side TO PUBLIC;
	GRANT USAGE ON SEQUENCE side_id_seq TO PUBLIC;
	CREATE TABLE wbdef (id int PRIMARY KEY, v int, n int DEFAULT note_it('default'));
	CREATE TABLE wbdom (id int PRIMARY KEY, v noted);
	SELECT cachesync.register('wbdef', mode => 'write_back');
	SELECT cachesync.register('wbdom', mode => 'write_back');
});
ok(upsert_applied('wbdef', 1, '{"id":1,"v":5}'), 'the entry of the default table is applied');
is($redis->cli('GET', 'public.side:1'), '{"id":1,"note":"default"}',
	'the row its default wrote to a write_through table is in Redis');
ok(upsert_applied('wbdom', 1, '{"id":1,"v":5}'), 'the entry of the domain table is applied');
# (an entry alone is read, then written, by two statements: the check runs twice)
is($node->safe_psql('postgres', "SELECT count(*) > 0 FROM side WHERE note = 'domain'"), 't',
	'its domain check wrote to the write_through table');
my $sd = CacheSync::Redis::cache_diff($node, 'side');
is($sd->{missing} + $sd->{stale} + $sd->{orphaned}, 0,
	'and every row written there is in Redis');

done_testing();
