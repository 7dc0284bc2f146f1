#!/bin/sh
# make run: a demo of tern on this machine, in ./run/, on the embedded
# defaults. It makes a demo account, delivers a few sample messages through
# tern-deliver, and shows what arrived. Each server joins here as it lands,
# on loopback ports, until this starts the whole suite.
set -eu
cd "$(dirname "$0")/.."
BIN=$PWD/bin
RUN=$PWD/run
PATH=$BIN:$PATH
export PATH

rm -rf "$RUN"
mkdir -p "$RUN/etc/tern" "$RUN/spool" "$RUN/home/demo"
HOME=$RUN/home/demo
export HOME

i=0
for subject in "Welcome to tern" "Your order has shipped" "Minutes of the meeting"; do
	i=$((i + 1))
	printf 'From: Sender %d <sender%d@example.org>\nTo: demo@localhost\nSubject: %s\nDate: %s\nMessage-ID: <demo%d@localhost>\n\nThis is sample message %d.\n' \
		"$i" "$i" "$subject" "$(date -R)" "$i" "$i" |
		tern-deliver -f "sender$i@example.org" -r demo@localhost
done
printf 'From: golang-nuts <golang-nuts@googlegroups.example>\nTo: demo@localhost\nSubject: [go-nuts] generics\nList-Id: <golang-nuts.googlegroups.example>\n\nA list message, filed into a folder.\n' |
	tern-deliver -m Lists.Go -f golang-nuts@googlegroups.example -r demo@localhost

echo "Demo Maildir: $HOME/Maildir"
for dir in "$HOME/Maildir" "$HOME"/Maildir/.[!.]*; do
	[ -d "$dir/new" ] || continue
	name=${dir#"$HOME/Maildir"}
	echo "${name:-INBOX}:"
	for f in "$dir"/new/* "$dir"/cur/*; do
		[ -f "$f" ] || continue
		printf '  %-40s  %s\n' "$(grep -m1 '^Subject:' "$f" | cut -c10-)" "$(basename "$f")"
	done
done
