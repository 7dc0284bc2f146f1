#!/bin/sh
# tests/bench/smtp.sh — tern-smtpd receiving load beside Postfix.
#
# Postfix's smtp-source sends N messages of 4 KB at 1, 8 and 32 concurrent
# sessions to: smtp-sink (the no-work ceiling), tern-smtpd under tcpserver
# (-c 64 -b 128: the default backlog of 20 drops connections at 32),
# tern-smtpd --listen, and a private Postfix instance on a loopback port
# that keeps every message on hold (queued, fsynced, not delivered). For
# each: messages per second, and how many reached the queue; the goal is
# tern at 8 sessions >= 1.5 x Postfix, none lost. Every target is started
# once; ROUNDS rounds then run them in turn (so a burst of load on this
# shared machine hits all alike), and the medians are reported.
#
#   sh tests/bench/smtp.sh                      N=2000 ROUNDS=3
#   N=300 ROUNDS=1 SESSIONS=8 sh tests/bench/smtp.sh
#
# On ext4 without a journal, every new file skips the inodes deleted in
# the last 12 hours (dirtytime_expire_seconds) whose inode table blocks
# are in the cache: a machine that has just run the tests, or this script
# (it deletes its queues at the end), pays a scan on every create, and
# how much depends on the block group a run's directories land in, so
# results swing from run to run. Two opt-in remedies (root):
#   DROP_CACHES=1  empties the kernel's caches first (helps until the
#                  blocks are read again);
#   FRESH_FS=1     runs on an ext4 file system made for the run (a 4 GiB
#                  sparse image in /var/tmp, loop-mounted; FRESH_FS_OPTS
#                  passes mkfs.ext4 options, e.g. "-O ^has_journal");
#                  removing the image at the end keeps the disk busy for
#                  a while: let the load settle before the next run.
#
# Needs (Debian): postfix (smtp-source, smtp-sink), ucspi-tcp (tcpserver),
# python3 (free ports). Run as root: Postfix's master must be.
set -eu
cd "$(dirname "$0")/../.."
N=${N:-2000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-"1 8 32"}
for p in smtp-source smtp-sink tcpserver postfix python3; do
	command -v $p >/dev/null || PATH=$PATH:/usr/sbin
	command -v $p >/dev/null || { echo "smtp.sh: $p is not installed (apt-get install postfix ucspi-tcp python3)"; exit 1; }
done
if [ "${DROP_CACHES:-}" = 1 ]; then
	sync
	echo 3 > /proc/sys/vm/drop_caches
fi
base=${TMPDIR:-/tmp}
fresh=
if [ "${FRESH_FS:-}" = 1 ]; then
	fresh=$(mktemp -d /var/tmp/tern-smtp-fs.XXXXXX)
	chmod 755 "$fresh" # Postfix runs as postfix below it
	truncate -s 4G "$fresh/img"
	# shellcheck disable=SC2086 # options are words
	mkfs.ext4 -q -F ${FRESH_FS_OPTS:-} "$fresh/img"
	mkdir "$fresh/mnt"
	mount -o loop "$fresh/img" "$fresh/mnt"
	chmod 1777 "$fresh/mnt"
	base=$fresh/mnt
fi
work=$(mktemp -d "$base/tern-smtp-bench.XXXXXX")
chmod 755 "$work"
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	[ -f "$work/pf/etc/main.cf" ] && postfix -c "$work/pf/etc" stop >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	if [ -n "$fresh" ]; then
		# Postfix's processes leave a moment after "postfix stop".
		i=0
		until umount "$fresh/mnt" 2>/dev/null; do
			i=$((i + 1)); [ $i -lt 40 ] || { echo "smtp.sh: $fresh/mnt is still busy; unmount it yourself"; return; }
			sleep 0.25
		done
		rm -rf "$fresh"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT INT TERM

CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-smtpd ./cmd/tern-enqueue ./cmd/tern-queue
mkdir -p "$work/conf" "$work/spool"
echo bench.test > "$work/conf/hostname"
echo example.org > "$work/conf/domains"
echo "bob@example.org:{PLAIN}x::::$work/home:" > "$work/conf/users"
export TERN_CONF="$work/conf" TERN_QUEUE="$work/spool"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() {
	i=0
	until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1).close()" 2>/dev/null; do
		i=$((i + 1)); [ $i -lt 100 ] || { echo "nothing listens on $1"; exit 1; }; sleep 0.1
	done
}
now() { python3 -c 'import time; print(time.time())'; }

# send PORT SESSIONS: smtp-source, timed; prints the seconds.
send() {
	t0=$(now)
	smtp-source -s "$2" -m "$N" -l 4096 -f sender@remote.example -t bob@example.org "127.0.0.1:$1" 2>"$work/source.err" || true
	t1=$(now)
	python3 -c "print('%.3f' % ($t1 - $t0))"
}
row() { printf '%-22s %8s %10s %10s %8s\n' "$@"; }
# Queues only grow during the run: what a send added is the difference of
# two counts. Emptying them between sends would time, instead of the
# servers, the file system finding inodes for new files among thousands
# just deleted (ext4 without a journal skips recently deleted ones, a scan
# that took a third of tern-smtpd's CPU when the queue was emptied between
# sends).
tern_count() { "$work/bin/tern-queue" --list 2>/dev/null | grep -c '^[0-9a-f]\{21\} ' || true; }
postfix_count() { find "$pf/spool/hold" -type f | wc -l; }

# Every target, started once: NAME PORT.
targets=

# smtp-sink: the ceiling.
p=$(port)
smtp-sink -u nobody -c "127.0.0.1:$p" 256 >/dev/null 2>&1 &
pids="$pids $!"
targets="$targets smtp-sink:$p"

"$work/bin/tern-queue" --list >/dev/null 2>&1 || true # lays the queue out

# tern-smtpd under tcpserver: a process per connection.
p=$(port)
tcpserver -c 64 -b 128 -R -H -l 0 127.0.0.1 "$p" "$work/bin/tern-smtpd" --greet-delay 0 2>"$work/tcpserver.log" &
pids="$pids $!"
targets="$targets tcpserver:$p"

# tern-smtpd --listen: as root, a process per connection. A connection
# counts against --max-connections until its process is reaped: at 32
# sessions reconnecting at once, 64 was reached for an instant.
p=$(port)
"$work/bin/tern-smtpd" --greet-delay 0 --listen "127.0.0.1:$p" --max-connections 128 --max-per-ip 128 2>"$work/listen.log" &
pids="$pids $!"
targets="$targets listen:$p"

# tern-smtpd --listen --user nobody: tern-smtpd needs no root once port 25
# is bound and the queue is open, so with --user it drops at start and
# serves every connection in one process, where messages queued at once
# share the flush of incoming/.
if [ "$(id -u)" = 0 ]; then
	chmod 755 "$work"
	p=$(port)
	"$work/bin/tern-smtpd" --greet-delay 0 --listen "127.0.0.1:$p" --user nobody --max-connections 128 --max-per-ip 128 2>"$work/listen-user.log" &
	pids="$pids $!"
	targets="$targets user:$p"
fi

# A private Postfix: every message is put on hold, so it stays queued
# (written and fsynced by cleanup) and is never delivered.
p=$(port)
pf=$work/pf
mkdir -p "$pf/etc" "$pf/spool" "$pf/data"
cat > "$pf/etc/main.cf" <<EOF2
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
myhostname = bench.test
mydestination = example.org
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_client_restrictions = check_client_access static:HOLD
default_process_limit = 100
smtpd_client_connection_count_limit = 0
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
EOF2
cat > "$pf/etc/master.cf" <<EOF2
127.0.0.1:$p inet n - n - 64 smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF2
# postfix(1) runs a configuration outside /etc/postfix only when the
# default one lists it in alternate_config_directories; it says so to
# syslog alone. PF_ALLOW=1 lets this script add it (and take it out at
# the end).
if [ "${PF_ALLOW:-}" = 1 ]; then
	old=$(postconf -h alternate_config_directories)
	postconf -e "alternate_config_directories = $old $pf/etc"
	restore="postconf -e 'alternate_config_directories = $old'"
	trap 'eval "$restore"; cleanup' EXIT INT TERM
fi
# Postfix's own processes run as the postfix user: they must reach the
# work directory and own data_directory (master.lock lives there).
chmod 755 "$work"
chown postfix "$pf/data"
postfix -c "$pf/etc" check >/dev/null 2>&1 || true
if ! postfix -c "$pf/etc" start >/dev/null 2>&1; then
	echo "postfix: the private instance did not start; its log says why:"
	tail -5 "$pf/maillog" 2>/dev/null
	echo "(as root it runs from any directory; otherwise the directory must be in"
	echo "alternate_config_directories of /etc/postfix/main.cf: run with PF_ALLOW=1)"
	exit 1
fi
targets="$targets postfix:$p"
for t in $targets; do waitport "${t#*:}"; done

row target sessions seconds "msgs/s" queued
results=$work/results
: > "$results"
round=1
while [ $round -le "$ROUNDS" ]; do
	for s in $SESSIONS; do
		for t in $targets; do
			name=${t%%:*} p=${t#*:}
			case $name in
			postfix) before=$(postfix_count) ;;
			smtp-sink) before=0 ;;
			*) before=$(tern_count) ;;
			esac
			sec=$(send "$p" "$s")
			case $name in
			postfix) q=$(($(postfix_count) - before)) ;;
			smtp-sink) q=$N ;;
			*) q=$(($(tern_count) - before)) ;;
			esac
			rate=$(python3 -c "print(round($q/$sec))")
			row "$name" "$s" "$sec" "$rate" "$q"
			# Fewer queued than sent: what smtp-source heard (a refused
			# connection or a 4xx is not a loss; a 250 without an entry is).
			if [ "$q" != "$N" ] && [ -s "$work/source.err" ]; then
				sed 's/^/    smtp-source: /' "$work/source.err" | sort | uniq -c | head -5
			fi
			echo "$name $s $rate $q" >> "$results"
		done
	done
	round=$((round + 1))
done

echo
echo "medians of $ROUNDS rounds, msgs/s (tcpserver, listen: a process per connection; user: one process)"
python3 - "$results" "$N" <<'EOF2'
import statistics, sys
rates, lost = {}, []
for line in open(sys.argv[1]):
    name, s, rate, q = line.split()
    rates.setdefault((name, int(s)), []).append(int(rate))
    if int(q) != int(sys.argv[2]):
        lost.append("short: %s at %s sessions queued %s of %s (smtp-source's errors, if any, are above)" % (name, s, q, sys.argv[2]))
names = []
for name, _ in rates:
    if name not in names:
        names.append(name)
sessions = sorted({s for _, s in rates})
print("%-10s" % "sessions" + "".join("%11s" % n for n in names))
for s in sessions:
    med = {n: statistics.median(rates[(n, s)]) for n in names if (n, s) in rates}
    print("%-10d" % s + "".join("%11d" % med.get(n, 0) for n in names))
    if med.get("postfix"):
        print("%-10s" % "  /postfix" + "".join("%10.2fx" % (med.get(n, 0) / med["postfix"]) for n in names))
print("goal: tern at 8 sessions >= 1.50x postfix, none lost")
for l in lost:
    print(l)
EOF2
