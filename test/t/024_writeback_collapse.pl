
# Write-back batches are folded per row key and applied set-based
# (cachesync.writeback_collapse, on by default), with the same result as
# applying every entry alone: the same entries (upserts of different column
# subsets, deletes, deletes followed by upserts, bad entries in the middle
# of batches) are appended to the stream of ca with collapsing on, and to
# the stream of cb after a restart with collapsing off; both tables and
# both dead-letter lists must end the same, and a statement-level trigger
# proves that ca took the collapsed path and cb the per-entry one.  A
# unique violation that only the set-based statement meets, and a value
# its column type refuses, send a batch to the per-entry path, which
# applies it correctly.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CacheSync::Redis;
use CacheSync::WriteBack;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('wbfold', $redis, "cachesync.batch_size = 500");

$node->safe_psql('postgres', q{
	CREATE TABLE stmts (rel text NOT NULL);
	GRANT INSERT ON stmts TO PUBLIC;
	CREATE FUNCTION count_stmt() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN INSERT INTO stmts VALUES (TG_TABLE_NAME); RETURN NULL; END$$;
	CREATE TABLE ca (id int, k2 text, a int, b text, c int NOT NULL DEFAULT 5, d text,
	                 PRIMARY KEY (id, k2));
	CREATE TABLE cb (LIKE ca INCLUDING ALL);
	CREATE TRIGGER count_stmt AFTER INSERT OR UPDATE OR DELETE ON ca
	  FOR EACH STATEMENT EXECUTE FUNCTION count_stmt();
	CREATE TRIGGER count_stmt AFTER INSERT OR UPDATE OR DELETE ON cb
	  FOR EACH STATEMENT EXECUTE FUNCTION count_stmt();
	CREATE TABLE cu (id int PRIMARY KEY, u text UNIQUE, n int);
	INSERT INTO cu VALUES (1, 'x', 0), (2, 'y', 0);
	CREATE TABLE cn (id numeric PRIMARY KEY, a text);
	SELECT cachesync.register('ca', mode => 'write_back');
	SELECT cachesync.register('cb', mode => 'write_back');
	SELECT cachesync.register('cu', mode => 'write_back');
	SELECT cachesync.register('cn', mode => 'write_back');
});
for my $t (qw(ca cb cu cn))
{
	CacheSync::WriteBack::wait_for(sub {
		$redis->cli('HEXISTS', '__cachesync:writeback', "public.$t:__writeback") eq '1' });
}

# the same seeded entries for both tables: 80 rows (two-column keys, one
# value with a ':' to escape), 2000 entries, about 15% deletes, upserts of
# random column subsets (none: a key-only touch), NULLs included
srand(20261126);
my @entries;
for my $i (1 .. 2000)
{
	my ($id, $k2) = (1 + int(rand(40)), rand() < 0.5 ? 'x' : 'y:z');
	if (rand() < 0.15)
	{
		push @entries, [ 'op', 'delete', 'data', qq({"id":$id,"k2":"$k2"}) ];
		next;
	}
	my @cols = (qq("id":$id), qq("k2":"$k2"));
	push @cols, '"a":' . (rand() < 0.1 ? 'null' : int(rand(1000))) if rand() < 0.5;
	push @cols, '"b":' . (rand() < 0.1 ? 'null' : '"b' . int(rand(1000)) . '"') if rand() < 0.5;
	push @cols, '"c":' . int(rand(1000)) if rand() < 0.5;
	push @cols, '"d":' . (rand() < 0.2 ? 'null' : '"d' . $i . '"') if rand() < 0.3;
	push @entries, [ 'op', 'upsert', 'data', '{' . join(',', @cols) . '}' ];
}
# bad entries in the middle of batches (position => fields; %T is the table)
my %bad = (
	100  => [ 'op', 'upsert', 'data', '{"id":1,"k2":"x","zz":1}' ],
	300  => [ 'op', 'upsert', 'data', '{"id":' ],
	700  => [ 'op', 'upsert', 'data', '{"id":1,"a":1}' ],
	1100 => [ 'op', 'merge', 'data', '{"id":1,"k2":"x"}' ],
	1500 => [ 'op', 'delete', 'data', '{"id":null,"k2":"x"}' ],
	1800 => [ 'op', 'upsert', 'data', '{"id":2,"k2":"x","a":1}', 'key', 'public.%T:999:x' ],
);
my @expected_states = ('42703', '22P02', '23502', '22023', '23502', '22023');
for my $pos (sort { $b <=> $a } keys %bad) { splice @entries, $pos, 0, $bad{$pos}; }

# appends the entries to $table's stream while the worker is stopped (so
# that batches are full), then an upsert of $end; returns its id
sub feed
{
	my ($table, $end, @fields) = @_;
	my $stream = "public.$table:__writeback";
	my $pid = CacheSync::WriteBack::worker_pid($node);
	kill 'STOP', $pid;
	CacheSync::WriteBack::pipe_commands($redis,
		map { $_->[0] =~ /^(MULTI|EXEC)$/ ? $_ : [ 'XADD', $stream, '*', map { s/%T/$table/r } @$_ ] }
		@fields);
	my $last = $redis->cli('XADD', $stream, '*', 'op', 'upsert', 'data', $end);
	kill 'CONT', $pid;
	ok(CacheSync::WriteBack::wait_applied($node, $table, $last), "$table: every entry applied");
	return $last;
}

sub stmts
{
	my ($table) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM stmts WHERE rel = '$table'");
}

# dead letters: SQLSTATE and message (table names made equal)
sub letters
{
	my ($table) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(sqlstate || ' ' || replace(replace(error, '"$table"', '"T"'),
		                                           'public.$table:', 'public.T:'),
		                  E'\\n' ORDER BY split_part(id, '-', 1)::numeric, split_part(id, '-', 2)::numeric)
		FROM cachesync.dead_letters('$table')});
}

my $n = scalar(@entries) + 1;

# collapsing on (the default)
feed('ca', '{"id":0,"k2":"end"}', @entries);
my $ca_stmts = stmts('ca');
ok($ca_stmts < $n / 10, "ca: folded batches ran a few statements ($ca_stmts for $n entries)");
is($node->safe_psql('postgres',
	q{SELECT string_agg(sqlstate, ',' ORDER BY split_part(id, '-', 1)::numeric, split_part(id, '-', 2)::numeric) FROM cachesync.dead_letters('ca')}),
	join(',', @expected_states), 'ca: each bad entry is a dead letter once, with its SQLSTATE');
is($node->safe_psql('postgres', q{SELECT wb_applied, wb_dead_lettered FROM cachesync.stats WHERE rel = 'ca'::regclass}),
	($n - scalar(@expected_states)) . '|' . scalar(@expected_states),
	'ca: stats count every entry consumed, folded ones included');
ok(CacheSync::WriteBack::wait_for(sub {
	my $d = CacheSync::Redis::cache_diff($node, 'ca');
	$d->{missing} + $d->{stale} + $d->{orphaned} == 0 }), 'ca: the cache equals the table');

# two spellings of one numeric key ('1' and '1.0') are one row: folded by
# their text they would make two folds, the delete applied before the
# upsert.  Tables whose key text is not canonical are never folded.
feed('cn', '{"id":9}', [ 'op', 'upsert', 'data', '{"id":1,"a":"x"}' ],
	[ 'op', 'delete', 'data', '{"id":1.0}' ]);
is($node->safe_psql('postgres', q{SELECT count(*) FROM cn WHERE id = 1}), '0',
	'cn: an upsert then a delete of the same numeric key spelled differently leaves no row');

# a unique violation a folded batch could meet: per-entry, u moves
# 1:x -> 1:tmp, then 2:y -> 2:x, then 1:tmp -> 1:y; folded, row 1 would take
# y while row 2 still holds it.  A table with a unique index besides its
# key's is never folded: the batch is applied entry by entry.
feed('cu', '{"id":0}', [ 'op', 'upsert', 'data', '{"id":1,"u":"tmp"}' ],
	[ 'op', 'upsert', 'data', '{"id":2,"u":"x"}' ],
	[ 'op', 'upsert', 'data', '{"id":1,"u":"y"}' ]);
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || u, ',' ORDER BY id) FROM cu WHERE id IN (1, 2)}),
	'1=y,2=x', 'cu: a batch the set-based statement refuses is applied entry by entry');
is($redis->cli('XLEN', 'public.cu:__writeback:dlq'), '0', 'cu: and nothing is dead-lettered');

# a value its column type refuses (found when the batch's data is read as
# rows): the batch is applied entry by entry and that entry dead-lettered
feed('cu', '{"id":0}', [ 'op', 'upsert', 'data', '{"id":4,"n":1}' ],
	[ 'op', 'upsert', 'data', '{"id":3,"n":"abc"}' ],
	[ 'op', 'upsert', 'data', '{"id":4,"n":2}' ]);
is($node->safe_psql('postgres', q{SELECT string_agg(id || '=' || n, ',' ORDER BY id) FROM cu WHERE id IN (3, 4)}),
	'4=2', 'cu: the good entries of a batch with a type error are applied');
is($node->safe_psql('postgres', q{SELECT string_agg(sqlstate, ',') FROM cachesync.dead_letters('cu')}),
	'22P02', 'cu: the entry with the type error is a dead letter');

# cr: a table whose stored rows differ from the entries (a BEFORE ROW
# trigger, a generated column, a default), with no other trigger: the
# worker settles the cache from the rows its upserts return, with the
# settles of one batch in flight while the next is applied (and the next
# read ahead), landed early for the dead letters.  Meanwhile SQL writers
# update the same rows (pushed as write_through): when both finish, the
# cache must equal the table, every row as Postgres stored it.
$node->safe_psql('postgres', q{
	CREATE TABLE cr (id int, k2 text, a int, b text, c int NOT NULL DEFAULT 5, d text,
	                 g int GENERATED ALWAYS AS (c * 2) STORED, PRIMARY KEY (id, k2));
	CREATE FUNCTION cr_before() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN NEW.b := upper(NEW.b); RETURN NEW; END$$;
	CREATE TRIGGER cr_before BEFORE INSERT OR UPDATE ON cr
	  FOR EACH ROW EXECUTE FUNCTION cr_before();
	SELECT cachesync.register('cr', mode => 'write_back');
});
CacheSync::WriteBack::wait_for(sub {
	$redis->cli('HEXISTS', '__cachesync:writeback', 'public.cr:__writeback') eq '1' });
my $sqlfile = PostgreSQL::Test::Utils::tempdir() . '/cr_writers.sql';
PostgreSQL::Test::Utils::append_to_file($sqlfile, join("\n", map {
	my $id = 1 + ($_ % 40);
	"UPDATE cr SET a = coalesce(a, 0) + 1, d = 'sql$_' WHERE id = $id AND k2 = 'x';"
} (1 .. 3000)));
my ($wout, $werr) = ('', '');
my $writers = IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-f', $sqlfile ],
	'>', \$wout, '2>', \$werr);
feed('cr', '{"id":0,"k2":"end","b":"last"}', @entries, @entries);
$writers->finish;
is($werr, '', 'cr: the SQL writers ran without error');
is($node->safe_psql('postgres', q{SELECT b FROM cr WHERE id = 0}), 'LAST',
	'cr: the table holds the rows as the trigger left them');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cachesync.dead_letters('cr')}),
	2 * scalar(@expected_states), 'cr: each bad entry is a dead letter');
ok(CacheSync::WriteBack::wait_for(sub {
	my $d = CacheSync::Redis::cache_diff($node, 'cr');
	$d->{missing} + $d->{stale} + $d->{orphaned} == 0 }),
	'cr: the cache equals the table (triggers, defaults, generated column, concurrent SQL writers)');
is($redis->cli('XLEN', 'public.cr:__writeback'), '0', 'cr: applied entries are trimmed from the stream');
is($node->safe_psql('postgres', q{SELECT wb_pending FROM cachesync.stats WHERE rel = 'cr'::regclass}),
	'0', 'cr: nothing is left pending');

# ck: a BEFORE trigger moves a row to another key.  The key the entry
# named has no row (settled as deleted); the row's own key, which no entry
# names, is read back and cached.
$node->safe_psql('postgres', q{
	CREATE TABLE ck (id int PRIMARY KEY, a text);
	CREATE FUNCTION ck_before() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN IF NEW.id < 100 THEN NEW.id := NEW.id + 1000; END IF; RETURN NEW; END$$;
	CREATE TRIGGER ck_before BEFORE INSERT ON ck FOR EACH ROW EXECUTE FUNCTION ck_before();
	SELECT cachesync.register('ck', mode => 'write_back');
});
CacheSync::WriteBack::wait_for(sub {
	$redis->cli('HEXISTS', '__cachesync:writeback', 'public.ck:__writeback') eq '1' });
# (in one MULTI: a worker blocked in XREADGROUP gets both in one batch)
feed('ck', '{"id":500,"a":"end"}', [ 'MULTI' ], [ 'op', 'upsert', 'data', '{"id":1,"a":"x"}' ],
	[ 'op', 'upsert', 'data', '{"id":2,"a":"y"}' ], [ 'EXEC' ]);
is($node->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM ck}), '500,1001,1002',
	'ck: the trigger moved the rows');
ok(CacheSync::WriteBack::wait_for(sub {
	my $d = CacheSync::Redis::cache_diff($node, 'ck');
	$d->{missing} + $d->{stale} + $d->{orphaned} == 0 }),
	'ck: the cache holds the moved rows under their own keys, and nothing under the named ones');

# collapsing off: the same entries, one by one, into cb
$node->append_conf('postgresql.conf', 'cachesync.writeback_collapse = off');
$node->restart;
feed('cb', '{"id":0,"k2":"end"}', @entries);
ok(stmts('cb') >= $n, 'cb: entries applied one by one (' . stmts('cb') . ' statements)');

# ck again, entry by entry: the rows the trigger moved are cached under
# their own keys too
feed('ck', '{"id":501,"a":"end"}', [ 'op', 'upsert', 'data', '{"id":3,"a":"z"}' ],
	[ 'op', 'upsert', 'data', '{"id":4,"a":"w"}' ]);
is($node->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM ck}),
	'500,501,1001,1002,1003,1004', 'ck, entry by entry: the trigger moved the rows');
ok(CacheSync::WriteBack::wait_for(sub {
	my $d = CacheSync::Redis::cache_diff($node, 'ck');
	$d->{missing} + $d->{stale} + $d->{orphaned} == 0 }),
	'ck, entry by entry: the cache holds the moved rows under their own keys');

is($node->safe_psql('postgres', q{SELECT count(*) FROM ca}), $node->safe_psql('postgres', q{SELECT count(*) FROM cb}),
	'ca and cb have as many rows');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ((TABLE ca EXCEPT TABLE cb) UNION ALL (TABLE cb EXCEPT TABLE ca)) x}),
	'0', 'folded application equals per-entry application');
ok($node->safe_psql('postgres', q{SELECT count(*) FROM ca WHERE k2 <> 'end'}) > 10, 'and the tables hold rows');
is(letters('ca'), letters('cb'), 'the same dead letters, with the same errors');

done_testing();
