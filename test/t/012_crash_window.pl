
# The windows where a pusher and the commit disagree:
# - a backend killed after its pre-commit push reached Redis and before its
#   commit record: Redis holds a value that never committed; the worker must
#   restore the committed row after the crash restart;
# - a transaction that fails at commit after its push (SERIALIZABLE): the
#   value is undone and the worker writes the committed row back;
# - a populator racing a write_through push whose commit is not yet visible:
#   the older row must not win.
# Redis is frozen (SIGSTOP) to hold a backend inside its push.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('crash', $redis,
	"cachesync.command_timeout = '60s'");

$node->safe_psql('postgres', q{
	CREATE TABLE acct (id int PRIMARY KEY, balance int);
	SELECT cachesync.register('acct');
	INSERT INTO acct SELECT g, 100 FROM generate_series(1, 10) g;
});
is($redis->cli('GET', 'public.acct:1'), '{"id":1,"balance":100}', 'committed value cached');

# the worker has marked Redis as loaded: after the crash below, only healing
# (not a reload of an empty Redis) can repair the stale value
for (1 .. 100)
{
	last if $redis->cli('EXISTS', '__cachesync:epoch') eq '1';
	usleep(100_000);
}
is($redis->cli('EXISTS', '__cachesync:epoch'), '1', 'the worker marked Redis as loaded');

# Starts psql running sql in the background; returns the harness.
sub background
{
	my ($sql, $out, $err) = @_;
	return IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', $out, '2>', $err);
}

# Waits until some backend runs a statement like $pattern and waits on Redis.
sub wait_for_redis_wait
{
	my ($pattern) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '$pattern'");
}

# Polls Redis until key holds want (or 30 s pass); returns what it holds.
sub redis_becomes
{
	my ($key, $want) = @_;
	my $got;
	for (1 .. 300)
	{
		$got = $redis->cli('GET', $key);
		last if $got eq $want;
		usleep(100_000);
	}
	return $got;
}

# 1. the crash window: push sent, backend killed before its commit record.
# The session connects to Redis first, so that its push (not a handshake)
# is what waits in Redis's socket buffer.
my $w = $node->background_psql('postgres', on_error_stop => 0);
$w->query_safe('UPDATE acct SET balance = balance + 1 WHERE id = 5');    # connects
my $pid = $w->query_safe('SELECT pg_backend_pid()');
$redis->freeze;
$w->query_until(qr/^$/, "UPDATE acct SET balance = 999 WHERE id = 1;\n");
ok(wait_for_redis_wait('UPDATE acct SET balance = 999%'), 'the writer waits inside its pre-commit push');
kill 'KILL', $pid;
eval { $w->quit };
$redis->thaw;    # Redis now applies the push of a transaction that never committed
$node->poll_query_until('postgres', 'SELECT true') or die 'no restart';
is($node->safe_psql('postgres', 'SELECT balance FROM acct WHERE id = 1'), '100',
	'the killed transaction did not commit');
is(redis_becomes('public.acct:1', '{"id":1,"balance":100}'), '{"id":1,"balance":100}',
	'after the crash restart the worker restores the committed row');

# 2. a SERIALIZABLE failure at commit, after the push: undone, then healed
$node->safe_psql('postgres', q{
	CREATE TABLE oncall (name text PRIMARY KEY, on_call boolean NOT NULL);
	SELECT cachesync.register('oncall');
	INSERT INTO oncall VALUES ('alice', true), ('bob', true);
});
my $s1 = $node->background_psql('postgres');
my $s2 = $node->background_psql('postgres', on_error_stop => 0);
$s1->query_safe('BEGIN ISOLATION LEVEL SERIALIZABLE');
$s1->query_safe('SELECT count(*) FROM oncall WHERE on_call');
$s2->query_safe('BEGIN ISOLATION LEVEL SERIALIZABLE');
$s2->query_safe('SELECT count(*) FROM oncall WHERE on_call');
$s1->query_safe("UPDATE oncall SET on_call = false WHERE name = 'alice'");
$s2->query_safe("UPDATE oncall SET on_call = false WHERE name = 'bob'");
$s1->query_safe('COMMIT');
my $res = $s2->query('COMMIT');
like($s2->{stderr}, qr/could not serialize access/, 'the second commit fails at commit');
$s1->quit;
$s2->quit;
is(redis_becomes('public.oncall:bob', '{"name":"bob","on_call":true}'),
	'{"name":"bob","on_call":true}',
	'the failed value was undone and the worker wrote the committed row back');
is($redis->cli('GET', 'public.oncall:alice'), '{"name":"alice","on_call":false}',
	'the committed change stays');

# 3. a populator racing a push whose commit is not yet visible: A pushes its
# new row (held in Redis's socket buffer while Redis is frozen); B reads the
# old committed row and writes it fenced.  Whatever order Redis applies them
# in, A's row must remain.
$redis->freeze;
my ($out, $err) = ('', '');
my $h = background('UPDATE acct SET balance = 555 WHERE id = 2', \$out, \$err);
ok(wait_for_redis_wait('UPDATE acct SET balance = 555%'), 'the writer waits inside its push');
my ($bout, $berr) = ('', '');
my $b = background("SELECT cachesync.prefill('acct', ARRAY['2'])", \$bout, \$berr);
ok(wait_for_redis_wait("SELECT cachesync.prefill%"), 'the populator read the old row and waits too');
$redis->thaw;
$h->finish;
$b->finish;
is($node->safe_psql('postgres', 'SELECT balance FROM acct WHERE id = 2'), '555', 'the writer committed');
is($redis->cli('GET', 'public.acct:2'), '{"id":2,"balance":555}',
	'the populator did not overwrite the newer row');

# 4. the same race against a delete: the deleted row must not come back
$redis->freeze;
($out, $err) = ('', '');
$h = background('DELETE FROM acct WHERE id = 3', \$out, \$err);
ok(wait_for_redis_wait('DELETE FROM acct WHERE id = 3%'), 'the deleter waits inside its push');
($bout, $berr) = ('', '');
$b = background("SELECT cachesync.prefill('acct', ARRAY['3'])", \$bout, \$berr);
ok(wait_for_redis_wait("SELECT cachesync.prefill%"), 'the populator waits too');
$redis->thaw;
$h->finish;
$b->finish;
is($redis->cli('EXISTS', 'public.acct:3'), '0', 'the deleted row did not come back');

# 5. write_around: the delete after the commit fails (the row's version key
# was made unusable by hand, so the fenced delete errors): nothing can fail
# any more, the stale value is still in Redis, and the worker must heal it
# from the intent set once Redis lets it.
$node->safe_psql('postgres', q{
	CREATE TABLE wa (id int PRIMARY KEY, v text);
	SELECT cachesync.register('wa', mode => 'write_around');
	INSERT INTO wa VALUES (1, 'old');
});
$redis->cli('SET', 'public.wa:1', '{"id":1,"v":"old"}');
$redis->cli('DEL', '__cachesync:v:public.wa:1');
$redis->cli('HSET', '__cachesync:v:public.wa:1', 'not', 'a version');
my $errors0 = $node->safe_psql('postgres', "SELECT errors FROM cachesync.stats WHERE rel = 'wa'::regclass");
$node->safe_psql('postgres', "UPDATE wa SET v = 'new' WHERE id = 1");
is($node->safe_psql('postgres', "SELECT errors FROM cachesync.stats WHERE rel = 'wa'::regclass"),
	$errors0 + 1, 'the failed delete after commit is counted as an error');
is($redis->cli('GET', 'public.wa:1'), '{"id":1,"v":"old"}', 'the stale value survived the commit');
$redis->cli('DEL', '__cachesync:v:public.wa:1');
my $healed;
for (1 .. 300)
{
	$healed = $redis->cli('GET', 'public.wa:1');
	last if $healed ne '{"id":1,"v":"old"}';
	usleep(100_000);
}
ok($healed eq '' || $healed eq '{"id":1,"v":"new"}',
	"the worker healed the key from the intent set (now: '$healed')");

# quiescence
my $d = CacheSync::Redis::cache_diff($node, 'acct');
is_deeply([ @$d{qw(missing stale orphaned)} ], [ 0, 0, 0 ], 'acct: cache equals the table');

done_testing();
