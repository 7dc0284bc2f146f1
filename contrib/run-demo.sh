#!/bin/sh
# make run: tern on this machine, in ./run/, on the embedded defaults.
# It makes a demo account (user demo, password demo), delivers sample
# messages through tern-deliver, shows what arrived, and starts the servers
# on loopback ports until you press Ctrl-C. With python3 it also sends
# mail by SMTP and reads it back by POP3. Each server joins here as it
# lands.
#
#   TERN_DEMO_POP3=127.0.0.1:2110   where tern-pop3d listens
#   TERN_DEMO_IMAP=127.0.0.1:2143   where tern-imapd listens
#   TERN_DEMO_SMTP=127.0.0.1:2525   where tern-smtpd listens for mail (MX mode)
#   TERN_DEMO_SUBMIT=127.0.0.1:2587 where tern-smtpd takes submissions (AUTH)
#   TERN_DEMO_ONCE=1                set everything up, check it, and stop
#   TERN_BIN, TERN_DEMO_DIR         the programs (./bin) and the demo's root (./run)
set -eu
cd "$(dirname "$0")/.."
BIN=${TERN_BIN:-$PWD/bin}
RUN=${TERN_DEMO_DIR:-$PWD/run}
PATH=$BIN:$PATH
export PATH
POP3=${TERN_DEMO_POP3:-127.0.0.1:2110}
IMAP=${TERN_DEMO_IMAP:-127.0.0.1:2143}
SMTP=${TERN_DEMO_SMTP:-127.0.0.1:2525}
SUBMIT=${TERN_DEMO_SUBMIT:-127.0.0.1:2587}

rm -rf "$RUN"
mkdir -p "$RUN/etc/tern" "$RUN/spool" "$RUN/home/demo" "$RUN/fetched"
CONF=$RUN/etc/tern
HOME=$RUN/home/demo
TERN_CONF=$CONF
TERN_QUEUE=$RUN/spool
export HOME TERN_CONF TERN_QUEUE

# The demo account. Run as root, the servers become the account after
# login and refuse to serve mail as root, so the account is nobody's then.
# The fields are user:hash:uid:gid:gecos:home:shell (tern-users(5)); an
# empty uid and gid mean the servers' own.
uid= gid=
if [ "$(id -u)" = 0 ]; then uid=65534 gid=65534; fi
echo localhost > "$CONF/hostname"
echo localhost > "$CONF/domains"
printf '# the demo account; make real ones with tern-passwd add\ndemo:%s:%s:%s::%s:\n' \
	"$(echo demo | tern-passwd hash)" "$uid" "$gid" "$HOME" > "$CONF/users"

i=0
for subject in "Welcome to tern" "Your order has shipped" "Minutes of the meeting"; do
	i=$((i + 1))
	printf 'From: Sender %d <sender%d@example.org>\nTo: demo@localhost\nSubject: %s\nDate: %s\nMessage-ID: <demo%d@localhost>\n\nThis is sample message %d.\n' \
		"$i" "$i" "$subject" "$(date -R)" "$i" "$i" |
		tern-deliver -f "sender$i@example.org" -r demo@localhost
done
printf 'From: golang-nuts <golang-nuts@googlegroups.example>\nTo: demo@localhost\nSubject: [go-nuts] generics\nList-Id: <golang-nuts.googlegroups.example>\n\nA list message, filed into a folder.\n' |
	tern-deliver -m Lists.Go -f golang-nuts@googlegroups.example -r demo@localhost

echo "Delivered into $HOME/Maildir:"
for dir in "$HOME/Maildir" "$HOME"/Maildir/.[!.]*; do
	[ -d "$dir/new" ] || continue
	name=INBOX
	[ "$dir" = "$HOME/Maildir" ] || name=$(basename "$dir" | cut -c2-)
	echo "  $name:"
	for f in "$dir"/new/* "$dir"/cur/*; do
		[ -f "$f" ] || continue
		printf '    %-32s %s\n' "$(grep -m1 '^Subject:' "$f" | cut -c10-)" "$(basename "$f")"
	done
done
if [ "$(id -u)" = 0 ]; then chown -R 65534:65534 "$HOME"; chmod 755 "$RUN" "$RUN/home"; fi

# Every server started here stops when the demo stops, however it stops:
# Ctrl-C, kill, or the terminal closing (SIGHUP, which tern-queue would
# otherwise take as "read the control files again" and outlive the demo).
# A trap cannot catch SIGKILL; for that each server also gets SIGTERM from
# the kernel when this shell dies (setpriv --pdeathsig, util-linux).
pids=
stop() {
	trap - EXIT HUP INT QUIT TERM
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' HUP INT QUIT TERM
deathsig=
if setpriv --pdeathsig TERM true 2>/dev/null; then deathsig="setpriv --pdeathsig TERM"; fi

# start NAME LOG COMMAND...: run a server in the background and wait for
# its first log line that says it is ready.
start() {
	name=$1 log=$2 ready=$3
	shift 3
	$deathsig "$@" 2>>"$log" &
	pids="$pids $!"
	n=0
	# tern-queue says nothing until there is mail: it is ready when it is
	# still running a moment later.
	if [ "$ready" = - ]; then
		sleep 0.3
		kill -0 $! 2>/dev/null && return
		echo "$name did not start:"; cat "$log"; exit 1
	fi
	until grep -q "$ready" "$log" 2>/dev/null; do
		n=$((n + 1))
		if [ $n -gt 100 ] || ! kill -0 $! 2>/dev/null; then
			echo "$name did not start:"; cat "$log"; exit 1
		fi
		sleep 0.1
	done
}
start tern-queue "$RUN/queue.log" - tern-queue
start tern-pop3d "$RUN/pop3d.log" "listening" tern-pop3d --listen "$POP3"
start tern-imapd "$RUN/imapd.log" "listening" tern-imapd --listen "$IMAP"
start "tern-smtpd (mx)" "$RUN/smtpd.log" "listening" tern-smtpd --listen "$SMTP" --greet-delay 0 --rdns=false
start "tern-smtpd (submission)" "$RUN/submit.log" "listening" tern-smtpd --mode submission --listen "$SUBMIT" --rdns=false

echo
echo "Running on loopback (logs in run/*.log); the demo account is demo, password demo:"
echo "  SMTP (MX)          $SMTP     mail for demo@localhost"
echo "  SMTP (submission)  $SUBMIT     AUTH PLAIN/LOGIN, then send anywhere local"
echo "  POP3               $POP3"
echo "  IMAP               $IMAP"
if ! command -v python3 >/dev/null; then
	echo "  (python3 is not installed, so the demo cannot send mail by SMTP and read it by POP3 for you: apt-get install python3)"
else
	python3 - "$SMTP" "$SUBMIT" "$POP3" <<'PY'
import poplib, smtplib, sys, time
def hp(a):
    h, p = a.rsplit(":", 1)
    return h, int(p)
smtp, submit, pop = map(hp, sys.argv[1:4])
msg = "From: a friend <friend@example.org>\r\nTo: demo@localhost\r\nSubject: Hello over SMTP\r\n\r\nSent through tern-smtpd, tern-queue and tern-deliver.\r\n"
with smtplib.SMTP(*smtp, timeout=10) as s:
    s.sendmail("friend@example.org", ["demo@localhost"], msg)
with smtplib.SMTP(*submit, timeout=10) as s:
    s.login("demo", "demo")
    s.sendmail("demo@localhost", ["demo@localhost"], msg.replace("friend@example.org", "demo@localhost").replace("Hello over SMTP", "A note to self, submitted"))
print("  sent two messages by SMTP (one to the MX port, one submitted with AUTH)")
for _ in range(100):
    p = poplib.POP3(*pop, timeout=10)
    p.user("demo"); p.pass_("demo")
    n, size = p.stat()
    if n >= 5:
        break
    p.quit()
    time.sleep(0.1)
print("  a POP3 client sees %d messages, %d octets:" % (n, size))
for i in range(1, n + 1):
    subject = [l for l in p.top(i, 0)[1] if l.lower().startswith(b"subject:")]
    print("   ", i, subject[0].decode() if subject else "")
p.quit()
PY
fi
# fetchmail wants TLS unless told otherwise (--sslproto ''; the demo has no
# certificate), and hands mail to an SMTP server on port 25 unless given an
# MDA: here tern-deliver, into a Maildir of its own.
echo "  try: swaks --server $SMTP --to demo@localhost"
echo "       fetchmail --sslproto '' --keep -p pop3 -P ${POP3##*:} -u demo --mda '$BIN/tern-deliver $RUN/fetched/Maildir/' ${POP3%:*}"
echo "       (password demo; the messages land in $RUN/fetched/Maildir/)"

if [ -n "${TERN_DEMO_ONCE:-}" ]; then exit 0; fi
echo
echo "Running; press Ctrl-C to stop."
wait
