
# CacheSync::Redis — a private redis-server for cachesync's TAP tests, and a
# helper that creates a PostgreSQL node wired to it.
#
#   use lib 'test/perl';               # or PROVE_FLAGS=-I test/perl (Makefile)
#   use CacheSync::Redis;
#
#   my $redis = CacheSync::Redis->new();                      # free port, empty db
#   my $auth  = CacheSync::Redis->new('--requirepass', 's3cret');
#   is($redis->cli('PING'), 'PONG');
#   my ($out, $err, $exit) = $redis->cli_raw({ timeout => 2 }, 'GET', 'k');
#   $redis->freeze; ...; $redis->thaw;   # SIGSTOP / SIGCONT: a hung Redis
#   $redis->stop; $redis->start;         # same port, same arguments
#   $redis->restart; $redis->kill9;
#
#   my $node = CacheSync::Redis::new_node('main', $redis,
#       "cachesync.on_redis_error = 'error'");                # + CREATE EXTENSION
#   my $bare = CacheSync::Redis::new_node('bare', $redis,
#       { create_extension => 0 });                           # library preloaded only
#
# The server runs with --save '' --appendonly no --bind 127.0.0.1 (extra
# arguments come after these and so override them), in a
# PostgreSQL::Test::Utils::tempdir; its log is tmp_check/log/<test>_redis_<port>.log.
# Every instance still running is stopped when the test script ends (END
# block), and also on SIGINT/SIGTERM/SIGHUP when the script has no handler of
# its own.

package CacheSync::Redis;

use strict;
use warnings;

use Carp;
use File::Basename qw(basename);
use IPC::Run;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Test::More ();
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

my @instances;    # weak references, for the END block

# Let END blocks (ours, PostgreSQL::Test::Cluster's) run when the test script
# is interrupted, so no redis-server or postmaster is left behind.
for my $sig (qw(INT TERM HUP))
{
	my $cur = $SIG{$sig};
	next if defined $cur && $cur ne '' && $cur ne 'DEFAULT';
	my %code = (INT => 130, TERM => 143, HUP => 129);
	$SIG{$sig} = sub { print STDERR "caught SIG$sig, exiting\n"; exit $code{$sig} };
}

sub _test_name
{
	my $n = basename($0);
	$n =~ s/\.[^.]+$//;
	return $n;
}

=pod

=head1 METHODS

=over

=item CacheSync::Redis->new(@extra_args)

Start a private redis-server on a free loopback port and wait until it answers
PING.  @extra_args are passed to redis-server verbatim after the defaults
(e.g. '--requirepass', 'pw' or '--maxmemory', '10mb').  A --requirepass given
here is also used by cli()/cli_raw().

=cut

sub new
{
	my ($class, @extra) = @_;
	my $self = bless {
		port  => PostgreSQL::Test::Cluster::get_free_port(),
		dir   => PostgreSQL::Test::Utils::tempdir('redis'),
		extra => [@extra],
		pid   => undef,
	}, $class;
	for my $i (0 .. $#extra - 1)
	{
		$self->{password} = $extra[ $i + 1 ] if $extra[$i] eq '--requirepass';
	}
	$self->{logfile} =
	  "$PostgreSQL::Test::Utils::log_path/" . _test_name() . "_redis_$self->{port}.log";
	push @instances, $self;
	weaken($instances[-1]);
	$self->start;
	return $self;
}

=item $redis->port, $redis->pid, $redis->dir, $redis->logfile, $redis->password

Accessors.  pid is undef while the server is not running.

=cut

sub port     { return $_[0]->{port}; }
sub pid      { return $_[0]->{pid}; }
sub dir      { return $_[0]->{dir}; }
sub logfile  { return $_[0]->{logfile}; }
sub password { return $_[0]->{password}; }
sub host     { return '127.0.0.1'; }

=item $redis->start

Start the server (again) on the same port with the same arguments and wait
for PING.  Dies if it does not come up within the default test timeout.

=cut

sub start
{
	my ($self) = @_;
	croak "redis-server already running (pid $self->{pid})" if $self->is_running;
	my @cmd = (
		'redis-server',
		'--bind'       => '127.0.0.1',
		'--port'       => $self->{port},
		'--save'       => '',
		'--appendonly' => 'no',
		'--daemonize'  => 'no',
		'--dir'        => $self->{dir},
		'--logfile'    => $self->{logfile},
		'--pidfile'    => "$self->{dir}/redis.pid",
		@{ $self->{extra} });
	Test::More::note("starting redis: @cmd");
	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN,  '<', '/dev/null');
		open(STDOUT, '>>', $self->{logfile});
		open(STDERR, '>&', \*STDOUT);
		# Test scripts may ignore signals; the server must not inherit that.
		$SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
		exec { $cmd[0] } @cmd or POSIX::_exit(127);
	}
	$self->{pid} = $pid;

	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		if (!$self->is_running)
		{
			$self->{pid} = undef;
			croak "redis-server exited at startup, see $self->{logfile}:\n"
			  . _tail($self->{logfile});
		}
		my ($out, undef, $exit) = $self->cli_raw({ timeout => 2 }, 'PING');
		if (defined $exit && $exit == 0 && $out eq 'PONG')
		{
			# make sure it is our server that answered, not another one
			# that grabbed the port in the meantime
			my ($info) = $self->cli_raw({ timeout => 2 }, 'INFO', 'server');
			return $self if $info =~ /^process_id:$pid\r?$/m;
		}
		usleep(50_000);
	}
	$self->kill9;
	croak "redis-server did not answer PING on port $self->{port}:\n"
	  . _tail($self->{logfile});
}

=item $redis->is_running

True while the server process exists (a frozen server is running).

=cut

sub is_running
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return 0 unless $pid;
	return 0 if waitpid($pid, WNOHANG) == $pid;    # reaped: it exited
	return kill(0, $pid) ? 1 : 0;
}

=item $redis->stop

SIGTERM (plus SIGCONT, in case it is frozen) and wait for the process to exit;
SIGKILL after the default test timeout.

=cut

sub stop
{
	my ($self) = @_;
	return $self->_signal_and_wait('TERM');
}

=item $redis->kill9

SIGKILL and reap: a crash, nothing is saved.

=cut

sub kill9
{
	my ($self) = @_;
	return $self->_signal_and_wait('KILL');
}

sub _signal_and_wait
{
	my ($self, $sig) = @_;
	my $pid = $self->{pid};
	return $self unless $pid;
	kill $sig, $pid;
	kill 'CONT', $pid;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (1)
	{
		my $r = waitpid($pid, WNOHANG);
		last if $r == $pid || $r == -1;
		if (time() > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			last;
		}
		usleep(20_000);
	}
	$self->{pid} = undef;
	return $self;
}

=item $redis->restart

stop, then start on the same port with the same arguments (an empty dataset,
unless the extra arguments enabled persistence).

=cut

sub restart
{
	my ($self) = @_;
	$self->stop;
	return $self->start;
}

=item $redis->freeze / $redis->thaw

SIGSTOP / SIGCONT.  While frozen, connections are accepted by the kernel but
nothing is answered: what a hung Redis looks like to a client.

=cut

sub freeze
{
	my ($self) = @_;
	croak 'redis-server is not running' unless $self->{pid};
	kill 'STOP', $self->{pid};
	return $self;
}

sub thaw
{
	my ($self) = @_;
	croak 'redis-server is not running' unless $self->{pid};
	kill 'CONT', $self->{pid};
	return $self;
}

=item $redis->cli_raw([{ timeout => SECONDS }], @args)

Run redis-cli -h 127.0.0.1 -p PORT @args (with the password, if any, in
REDISCLI_AUTH).  Returns ($stdout, $stderr, $exit), both outputs chomped.
Replies are in redis-cli's raw form (no "(integer)" decoration; a nil reply is
an empty string; an error reply is printed on stdout as "ERR ...").  On
timeout (default: the test suite's default timeout) the client is killed and
$exit is undef.

=cut

sub cli_raw
{
	my ($self, @args) = @_;
	my $opts = (@args && ref $args[0] eq 'HASH') ? shift @args : {};
	my $timeout = $opts->{timeout} // $PostgreSQL::Test::Utils::timeout_default;
	my @cmd = ('redis-cli', '-h', '127.0.0.1', '-p', $self->{port}, @args);
	my ($out, $err) = ('', '');
	local $ENV{REDISCLI_AUTH} = $self->{password} if defined $self->{password};
	my $timer = IPC::Run::timeout($timeout);
	my $exit;
	eval {
		IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err, $timer);
		$exit = $? >> 8;
		1;
	} or do {
		my $e = $@;
		die $e unless $timer->is_expired;
		$exit = undef;
	};
	chomp $out;
	chomp $err;
	return ($out, $err, $exit);
}

=item $redis->cli(@args)

Like cli_raw but returns stdout only, and dies when redis-cli fails (cannot
connect, timeout).  An error reply from the server does not die (redis-cli
exits 0): it is returned as "ERR ...".

=cut

sub cli
{
	my ($self, @args) = @_;
	my ($out, $err, $exit) = $self->cli_raw(@args);
	croak "redis-cli @args: timed out" unless defined $exit;
	croak "redis-cli @args: exit $exit: $err" if $exit != 0;
	return $out;
}

=item $redis->conf_lines

The postgresql.conf lines pointing cachesync at this server: a list in list
context, one newline-terminated string in scalar context (for append_conf).
Includes cachesync.redis_password when the server was started with
--requirepass.

=cut

sub conf_lines
{
	my ($self) = @_;
	my @lines = (
		"cachesync.redis_host = '127.0.0.1'",
		"cachesync.redis_port = $self->{port}");
	if (defined $self->{password})
	{
		(my $pw = $self->{password}) =~ s/'/''/g;
		push @lines, "cachesync.redis_password = '$pw'";
	}
	return wantarray ? @lines : join('', map { "$_\n" } @lines);
}

=back

=head1 FUNCTIONS

=over

=item CacheSync::Redis::new_node($name, $redis, @extra)

Create a PostgreSQL::Test::Cluster node, init it, configure
shared_preload_libraries = 'cachesync', $redis->conf_lines (skipped when $redis
is undef), cachesync.database = 'postgres' and the extra postgresql.conf lines,
start it and run CREATE EXTENSION cachesync in the postgres database.

Hash references among @extra are options:
  create_extension => 0   do not CREATE EXTENSION
  start => 0              do not start the node (implies no CREATE EXTENSION)
  init => { ... }         arguments for $node->init (e.g. allows_streaming => 1)

=cut

sub new_node
{
	my ($name, $redis, @extra) = @_;
	my %opt = (create_extension => 1, start => 1, init => {});
	my @lines;
	for my $e (@extra)
	{
		if (ref $e eq 'HASH') { %opt = (%opt, %$e); }
		else                  { push @lines, $e; }
	}
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} });
	$node->append_conf('postgresql.conf',
		join('', map { "$_\n" } "shared_preload_libraries = 'cachesync'",
			(defined $redis ? $redis->conf_lines : ()),
			"cachesync.database = 'postgres'",
			# a crashed backend or worker restarts the cluster, as in production
			"restart_after_crash = on", @lines));
	return $node unless $opt{start};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION cachesync')
	  if $opt{create_extension};
	return $node;
}

=item CacheSync::Redis::cache_diff($node, $table, [$db])

Compare a table registered with every column in json format against Redis:
returns a hash reference { rows, missing, stale, orphaned } counting rows
without a key, keys whose value differs from row_to_json of the row, and
keys under the table's prefix without a row (version keys and streams are
not rows).  Runs in the database $db (default 'postgres').

=cut

sub cache_diff
{
	my ($node, $table, $db) = @_;
	$db //= 'postgres';
	my $res = $node->safe_psql($db, qq{
		WITH r AS (
			SELECT cachesync.key('$table', VARIADIC k) AS key, j
			  FROM (SELECT ARRAY(SELECT x->>c FROM unnest(tb.key_columns) c) AS k,
			               row_to_json(t)::text AS j
			          FROM $table t, LATERAL (SELECT to_jsonb(t) AS x) xx,
			               cachesync.tables tb WHERE tb.rel = '$table'::regclass) s),
		     c AS (SELECT key, j, cachesync.redis_command('GET', key) AS v FROM r),
		     keys AS (SELECT k FROM json_array_elements_text(
		                cachesync.redis_command('KEYS',
		                  (SELECT replace(replace(replace(key_prefix, '\\', '\\\\'), '*', '\\*'), '?', '\\?')
		                     FROM cachesync.tables WHERE rel = '$table'::regclass) || '*')::json) k)
		SELECT (SELECT count(*) FROM r),
		       (SELECT count(*) FROM c WHERE v IS NULL),
		       (SELECT count(*) FROM c WHERE v IS NOT NULL AND v::jsonb <> j::jsonb),
		       (SELECT count(*) FROM keys WHERE k NOT IN (SELECT key FROM r)
		           AND k !~ '__(writeback|changes)')
	});
	my ($rows, $missing, $stale, $orphaned) = split /\|/, $res;
	return { rows => $rows, missing => $missing, stale => $stale, orphaned => $orphaned };
}

=back

=cut

sub _tail
{
	my ($file) = @_;
	open(my $fh, '<', $file) or return "(no log: $!)\n";
	my @l = <$fh>;
	close $fh;
	splice(@l, 0, @l - 20) if @l > 20;
	return join('', @l);
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $@, $!);
	$self->stop if $self->{pid};
}

END
{
	local $?;
	for my $r (@instances)
	{
		next unless defined $r && $r->{pid};
		eval { $r->stop; 1 } or kill 'KILL', $r->{pid};
	}
}

1;
