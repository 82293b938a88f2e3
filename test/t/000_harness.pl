
# Smoke test of the TAP harness itself: a private Redis through
# CacheSync::Redis (start, PING, freeze/thaw, stop/start, kill -9) and a
# PostgreSQL node with cachesync preloaded.  Does not need CREATE EXTENSION.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use CacheSync::Redis;

my $redis = CacheSync::Redis->new();
ok($redis->port > 0, 'redis has a port');
ok($redis->is_running, 'redis-server is running');
is($redis->cli('PING'), 'PONG', 'PING answers PONG');
is($redis->cli('SET', 'cs:smoke', "a b\\c"), 'OK', 'SET');
is($redis->cli('GET', 'cs:smoke'), "a b\\c", 'GET returns the value unchanged');
is($redis->cli('GET', 'cs:missing'), '', 'a nil reply is an empty string');

# a frozen server accepts connections but answers nothing
$redis->freeze;
my ($out, $err, $exit) = $redis->cli_raw({ timeout => 1 }, 'PING');
ok(!defined $exit, 'PING times out while redis is frozen');
$redis->thaw;
is($redis->cli('PING'), 'PONG', 'PING answers again after thaw');

# restart: same port, empty dataset (no persistence)
my $port = $redis->port;
$redis->restart;
is($redis->port, $port, 'restart keeps the port');
is($redis->cli('GET', 'cs:smoke'), '', 'restart starts from an empty dataset');

# a crash, then a start on the same port
my $old_pid = $redis->pid;
$redis->kill9;
ok(!$redis->is_running, 'kill9 stops redis');
($out, $err, $exit) = $redis->cli_raw('PING');
isnt($exit, 0, 'redis-cli fails while redis is down');
$redis->start;
isnt($redis->pid, $old_pid, 'start runs a new process');
is($redis->cli('PING'), 'PONG', 'PING after start');

# a password-protected server: cli() authenticates by itself
my $auth = CacheSync::Redis->new('--requirepass', "it's secret");
is($auth->cli('PING'), 'PONG', 'cli authenticates with --requirepass');
like(scalar $auth->conf_lines, qr/cachesync\.redis_password = 'it''s secret'/,
	'conf_lines carries the password, quoted');
$auth->stop;
ok(!$auth->is_running, 'stop stops redis');

# a Postgres node with the library preloaded, pointed at our Redis
my @lines = $redis->conf_lines;
is(scalar @lines, 2, 'conf_lines: host and port');
my $node = CacheSync::Redis::new_node('main', $redis, { create_extension => 0 });
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'cachesync', 'cachesync is preloaded');
is($node->safe_psql('postgres', 'SHOW cachesync.redis_port'),
	$redis->port, 'cachesync.redis_port points at the private redis');
$node->stop;

done_testing();
