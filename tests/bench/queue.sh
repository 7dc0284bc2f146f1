#!/bin/sh
# tests/bench/queue.sh — N small messages through the whole local path:
# tern-enqueue (P at a time) -> tern-queue (the daemon) -> tern-deliver
# into the Maildirs of U accounts, timed from the first injection to the
# last file in new/. Beside it, in the same run and on the same disk, the
# cost of one durable file write (write, fsync, rename, fsync of the
# directory): the floor under every queue, since each message takes at
# least three of them (submission, envelope, Maildir).
#
#   sh tests/bench/queue.sh                 N=10000 U=10 P=4 CONC=8
#   N=1000 sh tests/bench/queue.sh
set -eu
cd "$(dirname "$0")/../.."

N=${N:-10000}
U=${U:-10}
P=${P:-4}
CONC=${CONC:-8}

work=$(mktemp -d "${TMPDIR:-/tmp}/tern-queue-bench.XXXXXX")
trap 'kill $qpid 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM
qpid=

CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-enqueue ./cmd/tern-queue ./cmd/tern-deliver
mkdir -p "$work/etc" "$work/spool" "$work/home"
echo example.org > "$work/etc/domains"
echo mx.example.org > "$work/etc/hostname"
i=0
while [ $i -lt "$U" ]; do
	mkdir -p "$work/home/u$i"
	echo "u$i@example.org:{PLAIN}x:::u$i:$work/home/u$i::" >> "$work/etc/users"
	i=$((i + 1))
done
export TERN_CONF="$work/etc" TERN_QUEUE="$work/spool"

now() { date +%s.%N; }

# The disk's own cost: durable 1 KiB file writes, one after another.
fsyncs=1000
if command -v python3 >/dev/null 2>&1; then
	mkdir -p "$work/fsync"
	per=$(python3 - "$work/fsync" "$fsyncs" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
data = b"x" * 1024
dfd = os.open(d, os.O_RDONLY)
t = time.monotonic()
for i in range(n):
    tmp, final = os.path.join(d, "t%d" % i), os.path.join(d, "f%d" % i)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data); os.fsync(fd); os.close(fd)
    os.rename(tmp, final); os.fsync(dfd)
print("%.3f" % ((time.monotonic() - t) / n * 1000))
PY
)
else
	echo "queue.sh: python3 missing (Debian package python3); no fsync baseline" >&2
	per=0
fi

"$work/bin/tern-queue" --concurrency "$CONC" --scan-interval 10s 2> "$work/queue.log" &
qpid=$!
sleep 0.3

{
	printf 'From: bench@example.org\nSubject: bench\n\n'
	head -c 600 /dev/zero | tr '\0' 'x'
	printf '\n'
} > "$work/msg"
BIN="$work/bin" MSG="$work/msg"
export BIN MSG U
start=$(now)
seq 1 "$N" | xargs -P "$P" -n 50 sh -c '
	for i; do
		"$BIN/tern-enqueue" -f bench@example.org -- "u$((i % U))@example.org" < "$MSG" || exit 255
	done' sh
injected=$(now)
while :; do
	got=$(find "$work/home" -path '*/new/*' -type f | wc -l)
	[ "$got" -ge "$N" ] && break
	sleep 0.2
done
done_at=$(now)
kill -TERM $qpid; wait $qpid || true; qpid=

awk -v n="$N" -v s="$start" -v i="$injected" -v d="$done_at" -v per="$per" -v fs="$fsyncs" -v p="$P" -v c="$CONC" 'BEGIN {
	e = d - s
	printf "queue.sh: %d messages, %d injectors, concurrency %d\n", n, p, c
	printf "  injection:      %6.2f s  %8.0f msg/s (tern-enqueue alone, daemon busy beside it)\n", i - s, n / (i - s)
	printf "  end to end:     %6.2f s  %8.0f msg/s (tern-enqueue -> tern-queue -> tern-deliver -> new/)\n", e, n / e
	if (per > 0) {
		printf "  durable write:  %6.3f ms %8.0f writes/s (%d x write+fsync+rename+fsync dir, 1 KiB)\n", per, 1000 / per, fs
		printf "  end to end per message = %.1f durable writes\n", (e / n * 1000) / per
	}
}'
grep -c 'delivered' "$work/queue.log" | sed 's/^/  deliveries logged: /'
