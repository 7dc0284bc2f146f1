#!/bin/sh
# The IMAP benchmark of issue 15: tern-imapd beside a private Dovecot
# (Debian dovecot-core and dovecot-imapd, when installed) on loopback
# ports, over Maildirs of 10,000 messages (and more if asked): the first
# and later LOGIN+SELECT, FETCH of flags and sizes of every message,
# headers of the last 500, SEARCH, STORE on 1,000, FETCH of 100 bodies
# and APPEND of 100, the medians of each and the ratio Dovecot/tern
# (above 1: tern is faster). Both servers must show the same messages
# and sizes.
#
#   tests/bench/imap.sh [N...]     mailbox sizes (default 10000)
#   WARM=9 tests/bench/imap.sh 10000 100000
#
# Run as root, as a real server runs: each session process drops to the
# account (uid 65534) before it touches the Maildir.
set -eu
cd "$(dirname "$0")/../.."
sizes=$(echo "${*:-10000}" | tr ' ' ,)
work=$(mktemp -d "${TMPDIR:-/tmp}/tern-imap-bench.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT INT TERM
chmod 755 "$work"
CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-imapd ./tests/bench/imap
"$work/bin/imap" -work "$work/run" -tern "$work/bin/tern-imapd" -sizes "$sizes" -warm "${WARM:-5}"
