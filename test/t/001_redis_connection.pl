
# The Redis connection module: timeouts, cancel, postmaster death, AUTH,
# reconnect on reload, Unix sockets, SELECT db, unregister(purge), and the
# preload check.  Nothing here syncs rows.

use strict;
use warnings;

use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
my $node = CacheSync::Redis::new_node('conn', $redis,
	"cachesync.connect_timeout = '500ms'",
	"cachesync.command_timeout = '500ms'");

# Runs SQL; returns (elapsed seconds, stdout, stderr).
sub timed_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $t0 = time();
	$node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return (time() - $t0, $out, $err);
}

# Points the node at another Redis by editing postgresql.conf and reloading.
sub set_conf
{
	my (@lines) = @_;
	$node->append_conf('postgresql.conf', join("\n", @lines) . "\n");
	$node->reload;
	usleep(200_000);
}

my ($secs, $out, $err);

($secs, $out) = timed_psql('SELECT role FROM cachesync.redis_status()');
is($out, 'master', 'redis_status reports the server role');

# Redis stopped: a clear error at once
$redis->stop;
($secs, $out, $err) = timed_psql('SELECT * FROM cachesync.redis_status()');
like($err, qr/08006: could not connect to Redis at 127\.0\.0\.1:\d+/,
	'stopped Redis: connection failure with SQLSTATE 08006');
like($err, qr/HINT:.*cachesync\.redis_host/, 'the hint names the settings');
cmp_ok($secs, '<', 3, "stopped Redis: fails fast (${secs}s)");
$redis->start;

# A listener whose accept queue is full drops SYNs: connect() hangs, and
# cachesync.connect_timeout must end the wait.
my $blackhole = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 0, ReuseAddr => 1)
  or die "listen: $!";
my $bport = $blackhole->sockport;
my @fillers;
for (1 .. 4)
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $bport,
		Blocking => 0);
	push @fillers, $s if $s;
}
set_conf("cachesync.redis_port = $bport");
($secs, $out, $err) = timed_psql('SELECT * FROM cachesync.redis_status()');
like($err, qr/could not connect to Redis|did not answer/,
	'unreachable Redis: connection error');
cmp_ok($secs, '<', 2.5, "unreachable Redis: gives up within the timeouts (${secs}s)");
close $_ for @fillers;
close $blackhole;
set_conf('cachesync.redis_port = ' . $redis->port);

# Frozen Redis (SIGSTOP): the kernel accepts the connection, nobody answers
$redis->freeze;
($secs, $out, $err) = timed_psql('SELECT * FROM cachesync.redis_status()');
like($err, qr/08006: Redis at 127\.0\.0\.1:\d+ did not answer within 500 ms/,
	'frozen Redis: timeout error');
cmp_ok($secs, '<', 2.5, "frozen Redis: returns after command_timeout (${secs}s)");

# Starts a backend waiting on the frozen Redis, ends it with $how
# (pg_cancel_backend or pg_terminate_backend); returns (seconds, stderr).
sub interrupt_waiting_backend
{
	my ($how) = @_;
	my ($bout, $berr) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-d', $node->connstr('postgres'), '-c',
			"SET cachesync.command_timeout = '60s'; SELECT * FROM cachesync.redis_status()"
		],
		'>', \$bout, '2>', \$berr);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%redis_status%'")
	  or die 'no backend waits on Redis';
	my $t0 = time();
	$node->safe_psql('postgres',
		"SELECT $how(pid) FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%redis_status%'");
	$h->finish;
	return (time() - $t0, $berr);
}

# pg_cancel_backend frees a backend waiting on a frozen Redis at once
my $berr;
($secs, $berr) = interrupt_waiting_backend('pg_cancel_backend');
like($berr, qr/canceling statement due to user request/, 'the wait was cancelled');
cmp_ok($secs, '<', 2, "cancel frees the backend at once (${secs}s)");

# pg_terminate_backend too
($secs, $berr) = interrupt_waiting_backend('pg_terminate_backend');
like($berr, qr/terminating connection due to administrator command/, 'the backend was terminated');
cmp_ok($secs, '<', 2, "terminate frees the backend at once (${secs}s)");
$redis->thaw;

($secs, $out) = timed_psql('SELECT role FROM cachesync.redis_status()');
is($out, 'master', 'after thaw the next call reconnects');

# Redis restarted under an idle connection: the next call reconnects
($secs, $out, $err) = timed_psql(
	"SELECT role FROM cachesync.redis_status();");
$redis->restart;
is(scalar($node->safe_psql('postgres', 'SELECT role FROM cachesync.redis_status()')),
	'master', 'works after a Redis restart');

# AUTH: a wrong password fails clearly and is never printed
my $secret_right = 'Right-Pa55-Qz7';
my $secret_wrong = 'Wrong-Pa55-Kx3';
my $auth = CacheSync::Redis->new('--requirepass', $secret_right);
set_conf('cachesync.redis_port = ' . $auth->port,
	"cachesync.redis_password = '$secret_wrong'");
$node->restart;
($secs, $out, $err) = timed_psql('SELECT * FROM cachesync.redis_status()');
like($err, qr/28000: Redis at 127\.0\.0\.1:\d+ refused the connection setup/,
	'wrong password: authentication error');
like($err, qr/WRONGPASS|invalid password/, "Redis's own reason is in the detail");
unlike($err, qr/\Q$secret_wrong\E|\Q$secret_right\E/, 'the message does not show the password');
# the password needs a restart: a reload would log its new value
set_conf("cachesync.redis_password = '$secret_right'");
($secs, $out, $err) = timed_psql('SELECT username FROM cachesync.redis_status()');
like($err, qr/refused the connection setup/, 'a reload does not change the password');
$node->restart;
($secs, $out, $err) = timed_psql('SELECT username FROM cachesync.redis_status()');
is($out, 'default', 'the right password authenticates after a restart');

# ACL user + password
$auth->cli('ACL', 'SETUSER', 'cs_app', 'on', '>' . $secret_right, '~*', '&*', '+@all');
set_conf("cachesync.redis_username = 'cs_app'");
($secs, $out, $err) = timed_psql('SELECT username FROM cachesync.redis_status()');
is($out, 'cs_app', 'ACL user name and password authenticate');
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$secret_wrong\E|\Q$secret_right\E/, 'the server log does not show the password');
$auth->stop;

# reload with another Redis: the next call reconnects to it
my $second = CacheSync::Redis->new();
set_conf("cachesync.redis_username = ''", "cachesync.redis_password = ''",
	'cachesync.redis_port = ' . $second->port);
$node->restart;
is(scalar($node->safe_psql('postgres', 'SELECT server FROM cachesync.redis_status()')),
	'127.0.0.1:' . $second->port, 'a new server setting takes effect');
$second->stop;

# a Unix socket
my $sockdir = PostgreSQL::Test::Utils::tempdir_short();
my $unix = CacheSync::Redis->new('--unixsocket', "$sockdir/redis.sock",
	'--unixsocketperm', '777');
set_conf("cachesync.redis_host = '$sockdir/redis.sock'");
is(scalar($node->safe_psql('postgres', 'SELECT server FROM cachesync.redis_status()')),
	"$sockdir/redis.sock", 'connects over a Unix socket');
$unix->stop;

# SELECT db, and unregister(purge) removes exactly the table's keys
set_conf("cachesync.redis_host = '127.0.0.1'", 'cachesync.redis_port = ' . $redis->port,
	'cachesync.redis_db = 3');
is(scalar($node->safe_psql('postgres', 'SELECT db FROM cachesync.redis_status()')),
	'3', 'redis_db is reported');
$node->safe_psql('postgres', q{
	CREATE TABLE purge_me (id int PRIMARY KEY);
	CREATE TABLE keep_me (id int PRIMARY KEY);
	SELECT cachesync.register('purge_me', key_prefix => 'p[1]*?:');
	SELECT cachesync.register('keep_me', key_prefix => 'p[1]x:');
});
for my $i (1 .. 2500)
{
	# few round trips: MSET in chunks
	next unless $i % 500 == 0;
	my @kv = map { ("p[1]*?:$_", 'v') } ($i - 499 .. $i);
	$redis->cli('-n', '3', 'MSET', @kv);
}
$redis->cli('-n', '3', 'XADD', 'p[1]*?:__writeback', '*', 'op', 'upsert');
$redis->cli('-n', '3', 'SET', 'p[1]x:1', 'keep');
$redis->cli('-n', '3', 'SET', 'p[1]*?', 'no colon: not under the prefix');
$redis->cli('-n', '0', 'SET', 'p[1]*?:1', 'other db');
my ($rc, $pout, $perr) = $node->psql('postgres',
	"SELECT cachesync.unregister('purge_me', purge => true)");
like($perr, qr/removed 2501 Redis keys of "purge_me"/, 'purge reports the keys removed');
is($redis->cli('-n', '3', 'EXISTS', 'p[1]*?:1', 'p[1]*?:2500', 'p[1]*?:__writeback'),
	'0', 'rows and streams under the prefix are gone');
is($redis->cli('-n', '3', 'GET', 'p[1]x:1'), 'keep', "another table's keys stay");
is($redis->cli('-n', '3', 'EXISTS', 'p[1]*?'), '1', 'a key outside the prefix stays');
is($redis->cli('-n', '0', 'GET', 'p[1]*?:1'), 'other db', 'other databases are untouched');
is(scalar($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.tables')),
	'1', 'the registration is gone');

# purge with Redis down fails and keeps the registration
$redis->stop;
($rc, $pout, $perr) = $node->psql('postgres',
	"SELECT cachesync.unregister('keep_me', purge => true)");
like($perr, qr/could not connect to Redis/, 'purge with Redis down fails');
is(scalar($node->safe_psql('postgres', 'SELECT count(*) FROM cachesync.tables')),
	'1', 'and the registration stays');
$redis->start;

# postmaster death ends a backend waiting on a frozen Redis
$redis->freeze;
my ($bout, $t0);
($bout, $berr) = ('', '');
my $h = IPC::Run::start(
	[
		'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		"SET cachesync.command_timeout = '60s'; SELECT * FROM cachesync.redis_status()"
	],
	'>', \$bout, '2>', \$berr);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%redis_status%'");
my $backend_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%redis_status%'");
kill 'KILL', $node->{_pid};
$t0 = time();
my $gone = 0;
while (time() - $t0 < 10)
{
	if (!kill(0, $backend_pid)) { $gone = 1; last; }
	usleep(50_000);
}
$secs = time() - $t0;
ok($gone, "postmaster death ends the waiting backend (${secs}s)");
cmp_ok($secs, '<', 3, 'within moments');
$h->finish;
$redis->thaw;
$node->{_pid} = undef;

# without shared_preload_libraries: a clear error, not a half-working setup
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->start;
$bare->safe_psql('postgres', 'CREATE EXTENSION cachesync; CREATE TABLE t (id int PRIMARY KEY)');
($rc, $pout, $perr) = $bare->psql('postgres', "SELECT cachesync.register('t')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($perr, qr/55000: cachesync must be loaded via shared_preload_libraries/,
	'register without preload: 55000');
like($perr, qr/HINT:.*shared_preload_libraries/, 'the hint says how to fix it');
$bare->stop;

done_testing();
