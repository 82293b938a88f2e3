
# A change stream entry Redis refuses (here: the stream key holds a string,
# so XADD answers WRONGTYPE) stays in the outbox and is retried, without
# holding up other tables' streams and without making the backends treat
# Redis as down; once the key is fixed the entries arrive, in order.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('refused', $redis);

$node->safe_psql('postgres', q{
	CREATE TABLE good (id int PRIMARY KEY, v int);
	CREATE TABLE bad (id int PRIMARY KEY, v int);
	SET client_min_messages = warning;
	SELECT cachesync.register('good', changes => true);
	SELECT cachesync.register('bad', changes => true);
});

sub wait_for
{
	my ($cond) = @_;
	my $t0 = time();
	while (time() - $t0 < 20) { return 1 if $cond->(); usleep(50_000); }
	return 0;
}

$redis->cli('SET', 'public.bad:__changes', 'not a stream');
$node->safe_psql('postgres', q{
	INSERT INTO bad VALUES (1, 1);
	UPDATE bad SET v = 2 WHERE id = 1;
	INSERT INTO good VALUES (1, 1);
});
ok(wait_for(sub { $redis->cli('XLEN', 'public.good:__changes') eq '1' }),
	'the other table\'s change arrives');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM cachesync.changes_outbox WHERE rel = 'bad'::regclass"),
	'2', 'the refused entries stay in the outbox');

# Redis is not treated as down: a write_through push still goes straight in
$node->safe_psql('postgres', 'UPDATE good SET v = 5 WHERE id = 1');
is($redis->cli('GET', 'public.good:1'), '{"id":1,"v":5}', 'a push still reaches Redis at commit');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.queue'), '0',
	'nothing was queued for want of Redis');
ok(wait_for(sub { $redis->cli('XLEN', 'public.good:__changes') eq '2' }),
	'later changes of the other table keep arriving');

# the key fixed: the waiting entries arrive, in order
$redis->cli('DEL', 'public.bad:__changes');
ok(wait_for(sub { ($redis->cli('XLEN', 'public.bad:__changes') // '') eq '2' }),
	'the refused entries arrive once the key is fixed');
my $entries = join(' ', split /\n/, $redis->cli('XRANGE', 'public.bad:__changes', '-', '+'));
like($entries, qr/op insert .*"v":1.* op update .*"v":2/, 'in commit order');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.changes_outbox'), '0',
	'the outbox is empty');

my $log = slurp_file($node->logfile);
like($log, qr/Redis refused \d+ change stream entries/, 'the refusal was logged');
unlike($log, qr/is unreachable/, 'and Redis was never called unreachable');

done_testing();
