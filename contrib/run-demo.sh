#!/bin/sh
# make run: tern on this machine, in ./run/, on the embedded defaults.
# It makes a demo account (user demo, password demo), delivers sample
# messages through tern-deliver, shows what arrived, and starts the servers
# on loopback ports until you press Ctrl-C. Each server joins here as it
# lands.
#
#   TERN_DEMO_POP3=127.0.0.1:2110   where tern-pop3d listens
#   TERN_DEMO_ONCE=1                set everything up, check it, and stop
#   TERN_BIN, TERN_DEMO_DIR         the programs (./bin) and the demo's root (./run)
set -eu
cd "$(dirname "$0")/.."
BIN=${TERN_BIN:-$PWD/bin}
RUN=${TERN_DEMO_DIR:-$PWD/run}
PATH=$BIN:$PATH
export PATH
POP3=${TERN_DEMO_POP3:-127.0.0.1:2110}

rm -rf "$RUN"
mkdir -p "$RUN/etc/tern" "$RUN/spool" "$RUN/home/demo"
CONF=$RUN/etc/tern
HOME=$RUN/home/demo
export HOME

# The demo account. Run as root, the servers become the account after
# login and refuse to serve mail as root, so the account is nobody's then.
ids="::"
if [ "$(id -u)" = 0 ]; then ids=":65534:65534:"; fi
echo localhost > "$CONF/hostname"
echo localhost > "$CONF/domains"
printf '# the demo account; make real ones with tern-passwd add\ndemo:%s%s:%s::\n' \
	"$(echo demo | tern-passwd hash)" "$ids" "$HOME" > "$CONF/users"

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

pids=
stop() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

tern-pop3d --conf "$CONF" --listen "$POP3" 2>>"$RUN/pop3d.log" &
pids="$pids $!"

# Wait for the listener, then show that a POP3 client sees the mail.
n=0
until grep -q "listening" "$RUN/pop3d.log" 2>/dev/null; do
	n=$((n + 1))
	if [ $n -gt 50 ] || ! kill -0 $! 2>/dev/null; then
		echo "tern-pop3d did not start:"; cat "$RUN/pop3d.log"; exit 1
	fi
	sleep 0.1
done
echo
echo "tern-pop3d listens on $POP3 (log: run/pop3d.log); user demo, password demo."
if command -v python3 >/dev/null; then
	python3 - "$POP3" <<'PY'
import poplib, sys
host, port = sys.argv[1].rsplit(":", 1)
p = poplib.POP3(host, int(port), timeout=10)
p.user("demo"); p.pass_("demo")
n, size = p.stat()
print("  a POP3 client sees %d messages, %d octets:" % (n, size))
for i in range(1, n + 1):
    subject = [l for l in p.top(i, 0)[1] if l.lower().startswith(b"subject:")]
    print("   ", i, subject[0].decode() if subject else "")
p.quit()
PY
fi
echo "  try: fetchmail -p pop3 -P ${POP3##*:} -u demo 127.0.0.1   or   telnet ${POP3%:*} ${POP3##*:}"

if [ -n "${TERN_DEMO_ONCE:-}" ]; then exit 0; fi
echo
echo "Running; press Ctrl-C to stop."
wait
