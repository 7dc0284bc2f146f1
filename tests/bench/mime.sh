#!/bin/sh
# tests/bench/mime.sh — tern-mime unpack against munpack (Debian mpack) and
# ripmime on a generated corpus: a few hundred messages in the shapes mail
# comes in, one of them with a 20 MiB attachment.
#
# For each tool: the median wall time of RUNS passes over the corpus, its
# ratio to tern-mime, the median CPU time (user + system) of a pass, the
# peak RSS of any one run (/usr/bin/time -f %M), and how many of the
# original files it wrote back right: the right bytes under the right name,
# and the right bytes under any name. The passes run in rounds, every tool
# once a round and a different one first each round, so that a burst of
# load on a shared machine hits all tools alike; the ratio is the median of
# the per-round ratios. CPU time is the steadier figure where other work
# shares the machine. The output directories are made before a pass is
# timed: making them is the same work whatever the tool, and a fork per
# message would weigh as much as a tool's start-up.
#
#   sh tests/bench/mime.sh            N=300 messages, RUNS=5, BIG=20 (MiB)
#   N=50 RUNS=3 BIG=5 sh tests/bench/mime.sh
#   VERBOSE=1 sh tests/bench/mime.sh  also every pass's time and ratio
set -eu
cd "$(dirname "$0")/../.."

N=${N:-300}
RUNS=${RUNS:-5}
BIG=${BIG:-20}

work=$(mktemp -d "${TMPDIR:-/tmp}/tern-mime-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-mime ./tests/bench/mime/gencorpus
"$work/bin/gencorpus" -o "$work/corpus" -n "$N" -big "$BIG"
"$work/bin/gencorpus" -o "$work/ordinary" -n "$N" -big 0
nfiles=$(wc -l < "$work/corpus/expect.txt")
size=$(du -sm "$work/corpus" | cut -f1)

tools=tern-mime
for t in munpack ripmime; do
	if command -v "$t" >/dev/null 2>&1; then
		tools="$tools $t"
	else
		echo "mime.sh: $t not installed (Debian package $( [ $t = munpack ] && echo mpack || echo ripmime )); skipped" >&2
	fi
done
timer=
if [ -x /usr/bin/time ]; then
	timer=/usr/bin/time
else
	echo "mime.sh: /usr/bin/time missing (Debian package time); no peak RSS" >&2
fi

# unpack TOOL MESSAGE DIR [RSSFILE]
unpack() {
	tool=$1 msg=$2 dir=$3 rss=${4:-}
	set --
	[ -n "$rss" ] && [ -n "$timer" ] && set -- "$timer" -f %M -a -o "$rss"
	case $tool in
	tern-mime) "$@" "$work/bin/tern-mime" unpack -C "$dir" < "$msg" ;;
	munpack) "$@" munpack -q -f -C "$dir" < "$msg" ;;
	ripmime) "$@" ripmime -i "$msg" -d "$dir" ;;
	esac
}

# dirs OUT [CORPUS]: one empty directory per message under OUT
dirs() {
	rm -rf "$1"
	mkdir -p "$1"
	(cd "$work/${2:-corpus}" && for msg in *.eml; do echo "$1/${msg%.eml}"; done) | xargs mkdir
}

# pass TOOL OUT [RSSFILE [CORPUS]]: unpack every message into OUT/<message>/
pass() {
	for msg in "$work/${4:-corpus}"/*.eml; do
		d=${msg##*/}
		unpack "$1" "$msg" "$2/${d%.eml}" "${3:-}" >/dev/null 2>&1 || true
	done
}

# start TOOL OUT: the tool N times on an empty message, into OUT/<n>/
start() {
	for msg in "$work"/ordinary/*.eml; do
		d=${msg##*/}
		unpack "$1" /dev/null "$2/${d%.eml}" >/dev/null 2>&1 || true
	done
}

now() { date +%s.%N; }

printf '%s\n' "corpus: $N messages, $size MiB, $nfiles files to recover (one of $BIG MiB); $RUNS runs; $(nproc) CPUs"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# cpu FILE: the user and system time of this shell's children so far, in
# seconds, from times run by this shell itself (in a subshell it would
# count the subshell's children) and saved in FILE.
cpu() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } print t }' "$1"; }

# rounds KIND: RUNS rounds of every tool in turn, appending "ROUND TOOL
# WALL CPU" lines to $work/times.KIND; KIND is big (the corpus), ordinary
# (the ordinary corpus) or start (empty input). Each round starts with the
# next tool, so that none always runs first, and each pass starts with the
# disk quiet (sync), not writing back the pass before it.
ntools=$(echo $tools | wc -w)
rounds() {
	: > "$work/times.$1"
	i=0
	while [ $i -lt "$RUNS" ]; do
		order=$(echo $tools $tools | tr ' ' '\n' | tail -n +$((i % ntools + 1)) | head -n "$ntools")
		for tool in $order; do
			case $1 in
			big) dirs "$work/out" ;;
			*) dirs "$work/out" ordinary ;;
			esac
			sync
			times > "$work/cpu0"
			t0=$(now)
			case $1 in
			big) pass "$tool" "$work/out" ;;
			ordinary) pass "$tool" "$work/out" "" ordinary ;;
			start) start "$tool" "$work/out" ;;
			esac
			t1=$(now)
			times > "$work/cpu1"
			echo "$i $tool $(echo "$t1 - $t0" | bc) $(echo "$(cpu "$work/cpu1") - $(cpu "$work/cpu0")" | bc)" >> "$work/times.$1"
		done
		i=$((i + 1))
	done
}
rounds big
cp "$work/times.big" "$work/times"
# The ratio of each pass to tern-mime's in the same round.
awk 'NR == FNR { if ($2 == "tern-mime") base[$1] = $3; next } { printf "%s %s %.4f %s\n", $2, $3, $3 / base[$1], $4 }' \
	"$work/times" "$work/times" > "$work/ratios"

[ -n "${VERBOSE:-}" ] && sed "s/^/round: /" "$work/times" >&2

printf '%-10s %10s %8s %8s %12s %16s %16s\n' tool "median s" ratio "cpu s" "peak RSS KiB" "right name+data" "right data"
for tool in $tools; do
	median=$(awk -v t="$tool" '$1 == t {print $2}' "$work/ratios" | median)
	ratio=$(awk -v t="$tool" '$1 == t {print $3}' "$work/ratios" | median)
	cpus=$(awk -v t="$tool" '$1 == t {print $4}' "$work/ratios" | median)

	# One more pass under /usr/bin/time, whose output is also checked.
	dirs "$work/out"
	: > "$work/rss"
	pass "$tool" "$work/out" "$work/rss"
	peak=$(sort -n "$work/rss" | tail -n 1)
	[ -n "$peak" ] || peak=-

	# What was written: "MESSAGE SHA256 NAME" for every file.
	: > "$work/got"
	for d in "$work"/out/*/; do
		m=$(basename "$d")
		(cd "$d" && find . -type f -exec sha256sum {} + 2>/dev/null) |
			sed "s|^\([0-9a-f]*\)  \./|$m \1 |" >> "$work/got"
	done
	counts=$(awk '
		NR == FNR { byname[$1 " " $2 " " substr($0, length($1) + length($2) + 3)] = 1; bydata[$1 " " $2] = 1; next }
		{ name = substr($0, length($1) + length($2) + 3)
		  if (($1 " " $2 " " name) in byname) n++
		  if (($1 " " $2) in bydata) d++ }
		END { printf "%d %d", n, d }' "$work/got" "$work/corpus/expect.txt")
	set -- $counts
	printf '%-10s %10.2f %8.2f %8.2f %12s %16s %16s\n' "$tool" "$median" "$ratio" "$cpus" "$peak" "$1/$nfiles" "$2/$nfiles"
	if [ "$tool" != tern-mime ]; then
		# Which kinds of file this peer got wrong, by message number mod 8.
		awk '
			NR == FNR { byname[$1 " " $2 " " substr($0, length($1) + length($2) + 3)] = 1; next }
			{ name = substr($0, length($1) + length($2) + 3)
			  if (!(($1 " " $2 " " name) in byname)) { k = substr($1, 4) % 8; miss[k]++ } }
			END { for (k = 0; k < 8; k++) if (miss[k]) printf "  missed kind %d: %d\n", k, miss[k] }' \
			"$work/got" "$work/corpus/expect.txt"
	fi
done
echo "kinds: 0 ASCII name base64 (and the big file), 1 RFC 2231 name, 2 RFC 2047 name, 3 quoted-printable text,"
echo "       4 inside a forwarded message/rfc822, 5 uuencoded in the text, 6 7bit CSV, 7 two files, one RFC 2231 name in pieces"

# One process per message: CPU time per process and its ratio to tern-mime's.
rounds ordinary
rounds start
[ -n "${VERBOSE:-}" ] && sed "s/^/round ordinary: /" "$work/times.ordinary" >&2 && sed "s/^/round start: /" "$work/times.start" >&2
echo
echo "one process per message, $N messages: CPU time (user + system) per process, median of $RUNS rounds"
printf '%-10s %-9s %14s %8s %14s\n' tool input "cpu µs/proc" ratio "wall µs/proc"
for kind in ordinary start; do
	awk 'NR == FNR { if ($2 == "tern-mime") base[$1] = $4; next } { printf "%s %.4f %.4f\n", $2, $4 / base[$1], $3 }' \
		"$work/times.$kind" "$work/times.$kind" > "$work/ratios.$kind"
	for tool in $tools; do
		cpus=$(awk -v t="$tool" '$2 == t {print $4}' "$work/times.$kind" | median)
		ratio=$(awk -v t="$tool" '$1 == t {print $2}' "$work/ratios.$kind" | median)
		wall=$(awk -v t="$tool" '$1 == t {print $3}' "$work/ratios.$kind" | median)
		printf '%-10s %-9s %14.0f %8.2f %14.0f\n' "$tool" "$kind" "$(echo "$cpus * 1000000 / $N" | bc -l)" "$ratio" "$(echo "$wall * 1000000 / $N" | bc -l)"
	done
done
echo "ordinary: the corpus above without its big message ($(du -sk "$work/ordinary" | cut -f1) KiB); start: an empty message (tern-mime unpack, munpack -q, ripmime on /dev/null)"
