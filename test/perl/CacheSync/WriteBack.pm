
# Helpers shared by the write-back TAP tests (020-029).

package CacheSync::WriteBack;

use strict;
use warnings;

use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

# RESP encoding of one command (binary safe, no quoting rules).
sub resp
{
	my @args = @_;
	return '*' . scalar(@args) . "\r\n"
	  . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
}

# Sends many commands through redis-cli --pipe; dies unless all succeeded.
sub pipe_commands
{
	my ($redis, @commands) = @_;
	my $in = join('', map { resp(@$_) } @commands);
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'redis-cli', '-h', '127.0.0.1', '-p', $redis->port, '--pipe' ],
		'<', \$in, '>', \$out, '2>', \$err)
	  or die "redis-cli --pipe failed: $out $err";
	die "redis-cli --pipe: $out" unless $out =~ /errors: 0, replies: (\d+)/;
	return $1;
}

# Waits until the write-back worker has applied entry $id of $table.
sub wait_applied
{
	my ($node, $table, $id) = @_;
	my ($ms, $seq) = split /-/, $id;
	return $node->poll_query_until('postgres', qq{
		SELECT coalesce((SELECT split_part(last_id, '-', 1)::numeric * 1000000
		                        + split_part(last_id, '-', 2)::numeric
		                   FROM cachesync.writeback_progress WHERE rel = '$table'::regclass), 0)
		       >= $ms * 1000000 + $seq});
}

# Polls $code until it returns true (or ~timeout); returns the last result.
sub wait_for
{
	my ($code, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $t0 = time();
	my $r;
	while (!($r = $code->()) && time() - $t0 < $timeout) { usleep(50_000); }
	return $r;
}

# The pid of the write-back worker (waits for it).
sub worker_pid
{
	my ($node) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'cachesync writeback'");
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync writeback'");
}

1;
