#!/bin/sh
# tests/bench/smtp.sh — tern-smtpd receiving load beside Postfix.
#
# Postfix's smtp-source sends N messages of 4 KB at 1, 8 and 32 concurrent
# sessions to: smtp-sink (the no-work ceiling), tern-smtpd under tcpserver
# (-c 64 -b 128: the default backlog of 20 drops connections at 32),
# tern-smtpd --listen, and a private Postfix instance on a loopback port
# that keeps every message on hold (queued, fsynced, not delivered). For
# each: messages per second, and how many reached the queue; the goal is
# tern at 8 sessions >= 1.5 x Postfix, none lost.
#
#   sh tests/bench/smtp.sh            N=2000
#   N=300 sh tests/bench/smtp.sh
#
# Needs (Debian): postfix (smtp-source, smtp-sink), ucspi-tcp (tcpserver),
# python3 (free ports). Run as root: Postfix's master must be.
set -eu
cd "$(dirname "$0")/../.."
N=${N:-2000}
SESSIONS=${SESSIONS:-"1 8 32"}
for p in smtp-source smtp-sink tcpserver postfix python3; do
	command -v $p >/dev/null || PATH=$PATH:/usr/sbin
	command -v $p >/dev/null || { echo "smtp.sh: $p is not installed (apt-get install postfix ucspi-tcp python3)"; exit 1; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/tern-smtp-bench.XXXXXX")
chmod 755 "$work"
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	[ -f "$work/pf/etc/main.cf" ] && postfix -c "$work/pf/etc" stop >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	rm -rf "$work"
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
tern_count() { "$work/bin/tern-queue" --list 2>/dev/null | grep -c . || true; }
tern_reset() { rm -rf "$work/spool"; mkdir -p "$work/spool"; }

row() { printf '%-22s %8s %10s %10s %8s\n' "$@"; }
row target sessions seconds "msgs/s" queued
results=$work/results
: > "$results"

# smtp-sink: the ceiling.
p=$(port)
smtp-sink -u nobody -c "127.0.0.1:$p" 256 >/dev/null 2>&1 &
pids="$pids $!"
waitport "$p"
for s in $SESSIONS; do
	sec=$(send "$p" "$s")
	row smtp-sink "$s" "$sec" "$(python3 -c "print(round($N/$sec))")" "-"
done

# tern-smtpd under tcpserver.
p=$(port)
tcpserver -c 64 -b 128 -R -H -l 0 127.0.0.1 "$p" "$work/bin/tern-smtpd" --greet-delay 0 2>"$work/tcpserver.log" &
pids="$pids $!"
waitport "$p"
for s in $SESSIONS; do
	tern_reset
	sec=$(send "$p" "$s")
	q=$(tern_count)
	rate=$(python3 -c "print(round($q/$sec))")
	row "tern-smtpd tcpserver" "$s" "$sec" "$rate" "$q"
	echo "tcpserver $s $rate $q" >> "$results"
done

# tern-smtpd --listen.
p=$(port)
"$work/bin/tern-smtpd" --greet-delay 0 --listen "127.0.0.1:$p" --max-connections 64 --max-per-ip 64 2>"$work/listen.log" &
pids="$pids $!"
waitport "$p"
for s in $SESSIONS; do
	tern_reset
	sec=$(send "$p" "$s")
	q=$(tern_count)
	rate=$(python3 -c "print(round($q/$sec))")
	row "tern-smtpd --listen" "$s" "$sec" "$rate" "$q"
	echo "listen $s $rate $q" >> "$results"
done

# tern-smtpd --listen --user nobody: run as root, a listener forks a
# process per connection; tern-smtpd needs no root once port 25 is bound,
# so with --user it drops at start and serves every connection in one
# process. The queue's incoming/ is writable by anyone (1733).
if [ "$(id -u)" = 0 ]; then
	chmod 755 "$work"
	p=$(port)
	tern_reset
	"$work/bin/tern-queue" --list >/dev/null 2>&1 || true # lays the queue out
	"$work/bin/tern-smtpd" --greet-delay 0 --listen "127.0.0.1:$p" --user nobody --max-connections 64 --max-per-ip 64 2>"$work/listen-user.log" &
	pids="$pids $!"
	waitport "$p"
	for s in $SESSIONS; do
		rm -f "$work/spool/incoming/"* "$work/spool/mess/"* "$work/spool/env/"* 2>/dev/null || true
		sec=$(send "$p" "$s")
		q=$(tern_count)
		rate=$(python3 -c "print(round($q/$sec))")
		row "tern-smtpd --user" "$s" "$sec" "$rate" "$q"
		echo "user $s $rate $q" >> "$results"
	done
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
waitport "$p"
for s in $SESSIONS; do
	postsuper -c "$pf/etc" -d ALL hold >/dev/null 2>&1 || true
	sec=$(send "$p" "$s")
	q=$(find "$pf/spool/hold" -type f | wc -l)
	rate=$(python3 -c "print(round($q/$sec))")
	row postfix "$s" "$sec" "$rate" "$q"
	echo "postfix $s $rate $q" >> "$results"
done

echo
awk -v n="$N" '
	{ rate[$1 " " $2] = $3; q[$1 " " $2] = $4 }
	END {
		for (k in q) if (q[k] != n) printf "LOST: %s queued %d of %d\n", k, q[k], n
		if (rate["postfix 8"] > 0) {
			printf "at 8 sessions: tcpserver %.2fx postfix, --listen %.2fx postfix, --listen --user %.2fx postfix (goal 1.5x)\n",
				rate["tcpserver 8"] / rate["postfix 8"], rate["listen 8"] / rate["postfix 8"], rate["user 8"] / rate["postfix 8"]
		}
	}' "$results"
