#!/bin/sh
# The POP3 benchmark of issue 3: tern-pop3d beside a private Dovecot
# (Debian dovecot-core and dovecot-pop3d, when installed) on a loopback
# port, over 10,000- and 100,000-message Maildirs: LOGIN+STAT, UIDL, LIST,
# RETR of every message and QUIT, cold (the first session on a fresh copy)
# and warm (later sessions), a re-login right after a session that deleted
# ten messages (DELE+QUIT, then LOGIN+STAT+UIDL: "coldc" right after a cold
# session, on all but the last fresh copy; "churn" after the warm ones), the
# ratio Dovecot/tern for each, and the peak
# RSS of one session process. Both servers must give the same UIDLs, sizes
# and bytes. The goal: tern at least as fast on every row, under 50 MB per
# session at 100,000 messages.
#
#   tests/bench/pop3.sh [N...]     maildrop sizes (default 10000 100000)
#   WARM=5 COLD=3 tests/bench/pop3.sh 10000
#
# Run as root, as a real server runs: each session process drops to the
# account (uid 65534) before it touches the Maildir. Needs about 2 GB of
# free disk at 100,000 messages.
set -eu
cd "$(dirname "$0")/../.."
sizes=$(echo "${*:-10000 100000}" | tr ' ' ,)
work=$(mktemp -d "${TMPDIR:-/tmp}/tern-pop3-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
# The session runs as the account, which must reach its home.
chmod 755 "$work"
CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-pop3d ./tests/bench/pop3
if ! [ -x /usr/lib/dovecot/pop3 ]; then
	echo "note: Dovecot's POP3 server is not installed; tern-pop3d alone (Debian packages dovecot-core dovecot-pop3d)"
fi
"$work/bin/pop3" -work "$work/run" -tern "$work/bin/tern-pop3d" -sizes "$sizes" -warm "${WARM:-5}" -cold "${COLD:-3}"
