#!/bin/sh
# tests/bench/remote.sh — remote delivery: N messages of mixed sizes
# (60% 1 KB, 30% 10 KB, 10% 100 KB) to 10 domains whose MX hosts are
# sinks on 127.0.1.1-10 (tests/bench/remote, counting connections and
# messages), delivered by tern-queue and by a private Postfix (its qmgr
# and smtp(8), a transport map to the same kind of sinks) in one run.
#
# Each round, the same set is first queued in both and taken in, without
# delivery: smtp-source into tern-smtpd --listen, with tern-queue running
# against a port where nothing listens (every message taken in and
# deferred), and into Postfix's smtpd (every message put on hold by
# cleanup). Then each is let go (tern-queue --once --flush with the sinks'
# port; postsuper -H ALL and postqueue -f), and timed from
# that moment to the last message its sinks took; "empty" is when its
# queue directory was seen empty (polled every 0.1 s). Both run with
# their defaults: 100 deliveries at once, 20 a destination.
#
# With COLD=1, a third row, tern-cold: the set queued by tern-smtpd while
# no tern-queue runs, so that tern-queue's taking in of the submissions
# (incoming/ to env/ and mess/, fsynced; Postfix's cleanup does that work
# before its hold) is inside the timed window.
#
#   sh tests/bench/remote.sh                  N=10000 ROUNDS=3
#   N=2000 ROUNDS=1 COLD=1 sh tests/bench/remote.sh
#
# "cpu ms/msg" is the user+system CPU time a message took: tern-queue's,
# and that of every process of the private Postfix (its master's session),
# in the timed window. On a shared machine it says more than the rate.
#
# Goal: tern's rate >= 1.5x Postfix's, with no more connections.
# Needs (Debian): postfix (postfix, smtp-source), python3. Run as root:
# Postfix's master must be.
set -eu
cd "$(dirname "$0")/../.."
PATH=$PATH:/usr/sbin

N=${N:-10000}
ROUNDS=${ROUNDS:-3}
for p in smtp-source postfix postsuper postqueue python3; do
	command -v $p >/dev/null || { echo "remote.sh: $p is not installed (apt-get install postfix python3)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "remote.sh: run as root (Postfix's master must start as root)"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tern-remote-bench.XXXXXX")
chmod 755 "$work"
pids=
qpid=
hpid=
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
	[ -n "$hpid" ] && kill "$hpid" 2>/dev/null || true
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	[ -f "$work/pf/etc/main.cf" ] && postfix -c "$work/pf/etc" stop >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

export CGO_ENABLED=0
go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-smtpd ./cmd/tern-queue ./cmd/tern-enqueue ./cmd/tern-deliver ./tests/bench/remote

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() {
	i=0
	until python3 -c "import socket,sys; socket.create_connection(('$1',$2),1).close()" 2>/dev/null; do
		i=$((i + 1)); [ $i -lt 100 ] || { echo "nothing listens on $1:$2"; exit 1; }; sleep 0.1
	done
}
nanos() { date +%s%N; }

ips=127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4,127.0.1.5,127.0.1.6,127.0.1.7,127.0.1.8,127.0.1.9,127.0.1.10

# The sinks: one set for each MTA, so each one's counts are its own.
tport=$(port)
"$work/bin/remote" -ips "$ips" -port "$tport" -dns 127.0.0.1 -stats "$work/tern.stats" > "$work/tern.sink" &
pids="$pids $!"
pport=$(port)
"$work/bin/remote" -ips "$ips" -port "$pport" -stats "$work/postfix.stats" > "$work/postfix.sink" &
pids="$pids $!"
i=0
until grep -q ready "$work/tern.sink" 2>/dev/null && grep -q ready "$work/postfix.sink" 2>/dev/null; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "the sinks did not start"; exit 1; }; sleep 0.1
done
dns=$(sed -n 's/^dns=//p' "$work/tern.sink")

# tern: tern-smtpd takes the messages in (the bench's client may relay),
# tern-queue delivers them through the sinks' DNS.
mkdir -p "$work/conf" "$work/spool"
echo bench.test > "$work/conf/hostname"
echo example.org > "$work/conf/domains"
echo 127.0.0.0/8 > "$work/conf/relay"
: > "$work/conf/users"
export TERN_CONF="$work/conf" TERN_QUEUE="$work/spool"
"$work/bin/tern-queue" --list >/dev/null 2>&1 || true # lays the queue out
sport=$(port)
"$work/bin/tern-smtpd" --greet-delay 0 --listen "127.0.0.1:$sport" --max-connections 128 --max-per-ip 128 2>"$work/smtpd.log" &
pids="$pids $!"

# Postfix: smtpd holds what it takes; smtp(8) goes where the transport
# map says, the same sinks' addresses on their own port.
pf=$work/pf
mkdir -p "$pf/etc" "$pf/spool" "$pf/data"
chown postfix "$pf/data"
ppport=$(port)
: > "$pf/etc/transport"
i=0
for ip in $(echo "$ips" | tr , ' '); do
	echo "d$i.bench.example smtp:[$ip]:$pport" >> "$pf/etc/transport"
	i=$((i + 1))
done
cat > "$pf/etc/main.cf" <<EOF2
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
myhostname = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_client_restrictions = check_client_access static:HOLD
transport_maps = texthash:$pf/etc/transport
default_process_limit = 100
smtpd_client_connection_count_limit = 0
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
EOF2
cat > "$pf/etc/master.cf" <<EOF2
127.0.0.1:$ppport inet n - n - 64 smtpd
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
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF2
if ! postfix -c "$pf/etc" start >/dev/null 2>&1; then
	echo "postfix: the private instance did not start; its log says why:"
	tail -5 "$pf/maillog" 2>/dev/null
	exit 1
fi
waitport 127.0.0.1 "$sport"
waitport 127.0.0.1 "$ppport"

# inject_to PORT: the round's messages, the same for both.
inject_to() {
	target=$1
	d=0
	while [ $d -lt 10 ]; do
		for spec in "1024 60" "10240 30" "102400 10"; do
			set -- $spec
			m=$((N * $2 / 100 / 10))
			smtp-source -d -s 8 -m "$m" -l "$1" -f bench@example.org -t "u$d@d$d.bench.example" "127.0.0.1:$target" 2>>"$work/source.err" >/dev/null || true
		done
		d=$((d + 1))
	done
}
tern_left() {
	{ find "$work/spool/mess" -type f; find "$work/spool/incoming" -type f ! -name '.*'; } 2>/dev/null | wc -l
}
postfix_left() { find "$pf/spool/incoming" "$pf/spool/active" "$pf/spool/deferred" "$pf/spool/hold" "$pf/spool/maildrop" -type f 2>/dev/null | wc -l; }
stats() { cat "$work/$1.stats"; } # messages connections octets last-ns
# ticks PID: the CPU clock ticks (user+sys) process PID and its reaped
# children used so far, read with the shell's builtins: it is polled.
ticks() {
	{ read -r line < "/proc/$1/stat"; } 2>/dev/null || return 1
	set -- ${line##*) } # field 3, the state, is $1
	echo $((${12} + ${13} + ${14} + ${15}))
}
# pfticks: the same for the whole private Postfix, its master's session:
# the processes alive and, through the master, those that exited.
pfticks() {
	python3 - "$(cat "$pf/spool/pid/master.pid")" <<'EOF2'
import os, sys
master = int(sys.argv[1])
def stat(pid):
    with open("/proc/%s/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()
sid = stat(master)[3]
total = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        f = stat(p)
    except OSError:
        continue
    if f[3] == sid:
        total += int(f[11]) + int(f[12])
        if int(p) == master:
            total += int(f[13]) + int(f[14])
print(total)
EOF2
}
hz=$(getconf CLK_TCK)

results=$work/results
: > "$results"
printf '%-8s %6s %9s %9s %9s %7s %8s %9s\n' mta round msgs seconds "msgs/s" conns "empty s" "cpu ms/msg"
round=1
total=$((N / 100 * 60 / 10 * 10 + N / 100 * 30 / 10 * 10 + N / 100 * 10 / 10 * 10))
mtas="tern postfix"
[ "${COLD:-}" = 1 ] && mtas="$mtas tern-cold"
deadport=$(port)
while [ "$round" -le "$ROUNDS" ]; do
	# tern takes the set in and defers it, as Postfix holds it.
	"$work/bin/tern-queue" --dns "$dns" --smtp-port "$deadport" --scan-interval 10s 2>"$work/hold.log" &
	hpid=$!
	inject_to "$sport"
	inject_to "$ppport"
	i=0
	while :; do
		tq=$(find "$work/spool/mess" -type f | wc -l)
		[ "$(find "$work/spool/incoming" -type f ! -name '.*' | wc -l)" -eq 0 ] &&
			[ "$(grep -c 'info: deferred ' "$work/hold.log")" -ge "$tq" ] && break
		i=$((i + 1)); [ $i -lt 600 ] || { echo "tern-queue did not take the set in"; exit 1; }
		sleep 0.1
	done
	kill "$hpid"; wait "$hpid" 2>/dev/null || true
	i=0
	while [ "$(find "$pf/spool/hold" -type f | wc -l)" -lt "$total" ]; do
		i=$((i + 1)); [ $i -lt 600 ] || break; sleep 0.1
	done
	pq=$(find "$pf/spool/hold" -type f | wc -l)
	for mta in $mtas; do
		sink=${mta%-cold}
		if [ $mta = tern-cold ]; then
			inject_to "$sport"
			tq=$(tern_left)
		fi
		set -- $(stats $sink)
		m0=$1 c0=$2
		[ $mta = postfix ] && k0=$(pfticks)
		k1=0
		t0=$(nanos)
		case $mta in
		tern)
			# --flush: the deferred entries are due now.
			"$work/bin/tern-queue" --once --flush --dns "$dns" --smtp-port "$tport" 2>"$work/queue.log" &
			qpid=$!
			;;
		tern-cold)
			"$work/bin/tern-queue" --dns "$dns" --smtp-port "$tport" --scan-interval 10s 2>"$work/queue.log" &
			qpid=$!
			;;
		postfix)
			postsuper -c "$pf/etc" -H ALL >/dev/null 2>&1
			postqueue -c "$pf/etc" -f
			;;
		esac
		want=$tq
		[ $mta = postfix ] && want=$pq
		i=0
		while :; do
			set -- $(stats $sink)
			if [ $mta = postfix ]; then left=$(postfix_left); else left=$(tern_left); fi
			# tern-queue's CPU as last seen (--once ends it when the queue
			# is empty: this misses at most its last 0.1 s).
			if [ $mta != postfix ] && k=$(ticks "$qpid"); then k1=$k; fi
			[ "$left" -eq 0 ] && [ $(($1 - m0)) -ge "$want" ] && break
			i=$((i + 1)); [ $i -lt 6000 ] || { echo "$mta: still $left queued after 10 minutes"; break; }
			sleep 0.1
		done
		t2=$(nanos)
		if [ $mta = postfix ]; then
			k1=$(($(pfticks) - k0))
		else
			k1=$(ticks "$qpid" || echo "$k1")
		fi
		set -- $(stats $sink)
		msgs=$(($1 - m0)) conns=$(($2 - c0)) last=$4
		if [ $mta != postfix ]; then kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; qpid=; fi
		python3 - "$mta" "$round" "$msgs" "$t0" "$last" "$t2" "$conns" "$want" "$k1" "$hz" >> "$results" <<'EOF2'
import sys
mta, rnd, msgs, t0, last, t2, conns, want, ticks, hz = sys.argv[1:]
sec = (int(last) - int(t0)) / 1e9
cpu = int(ticks) / int(hz) * 1000 / max(int(msgs), 1)
print(mta, rnd, msgs, "%.3f" % sec, "%.0f" % (int(msgs) / sec), conns, "%.2f" % ((int(t2) - int(t0)) / 1e9), want, "%.3f" % cpu)
EOF2
		tail -1 "$results" | awk '{ printf "%-8s %6s %9s %9s %9s %7s %8s %9s\n", $1, $2, $3, $4, $5, $6, $7, $9 }'
	done
	round=$((round + 1))
done

echo
echo "medians of $ROUNDS rounds of $total messages to 10 domains"
python3 - "$results" <<'EOF2'
import statistics, sys
rows = {}
short = []
for line in open(sys.argv[1]):
    mta, rnd, msgs, sec, rate, conns, empty, want, cpu = line.split()
    rows.setdefault(mta, []).append((float(rate), int(conns), float(empty), float(sec), float(cpu)))
    if int(msgs) < int(want):
        short.append("%s round %s: the sinks took %s of %s" % (mta, rnd, msgs, want))
med = {m: [statistics.median(r[i] for r in v) for i in range(5)] for m, v in rows.items()}
print("%-8s %9s %9s %7s %9s %11s" % ("mta", "seconds", "msgs/s", "conns", "empty s", "cpu ms/msg"))
for m, (rate, conns, empty, sec, cpu) in med.items():
    print("%-8s %9.2f %9.0f %7d %9.2f %11.3f" % (m, sec, rate, conns, empty, cpu))
for m in ("tern", "tern-cold"):
    if m in med and "postfix" in med:
        t, p = med[m], med["postfix"]
        print("%s/postfix: rate %.2fx, connections %.2fx, time to empty %.2fx, CPU a message %.2fx" % (m, t[0] / p[0], t[1] / p[1], t[2] / p[2], t[4] / p[4]))
print("goal: rate >= 1.50x, connections <= 1.00x")
for s in short:
    print(s)
EOF2
if [ -s "$work/source.err" ]; then
	echo "smtp-source said:"; sort "$work/source.err" | uniq -c | head -5
fi
