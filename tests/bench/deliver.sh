#!/bin/sh
# Local delivery, one process per message, tern-deliver beside procmail,
# maildrop and dovecot-lda (each when installed): per-message medians, the
# ratios to tern-deliver, and the fsync calls each makes. tern-deliver runs
# twice: as is, and with GOMAXPROCS=1 as a caller may start it.
# Then LMTP: the same messages through one `tern-deliver --lmtp` and one
# Dovecot LMTP server (Debian's dovecot-lmtpd, a private instance), over
# one connection each, interleaved, then over 4 connections at once:
# per-message medians, messages a second and the ratios to Dovecot.
#
#   tests/bench/deliver.sh [N]        N messages per tool (default 2000)
#   BASE=REV tests/bench/deliver.sh   also tern-deliver as of git revision
#                                     REV, interleaved in the same run, so
#                                     a change is measured against the same
#                                     noise (the tree is read with git
#                                     archive; the checkout is not touched)
#
# Run as root to deliver as an unprivileged user (uid 65534), as a real
# system would; dovecot-lda refuses to run as root without a userdb.
set -eu
cd "$(dirname "$0")/../.."
n=${1:-2000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
# How the Makefile builds it: static, without urfave/cli's man-page code.
export CGO_ENABLED=0 GOFLAGS=-tags=urfave_cli_no_docs
go build -o "$work/bin/" ./cmd/tern-deliver ./cmd/tern-lmtpd ./tests/bench/deliver
set --
if [ -n "${BASE:-}" ]; then
	mkdir "$work/base"
	git archive "$BASE" | tar -x -C "$work/base"
	(cd "$work/base" && go build -o "$work/base/tern-deliver" ./cmd/tern-deliver)
	set -- -other "tern-deliver@$BASE=$work/base/tern-deliver"
fi
for p in procmail maildrop strace; do
	command -v $p >/dev/null || echo "note: $p is not installed; its row is left out (Debian package $p)"
done
[ -x /usr/lib/dovecot/dovecot-lda ] || echo "note: dovecot-lda is not installed; its row is left out (Debian package dovecot-core)"
[ -x /usr/lib/dovecot/lmtp ] || echo "note: Dovecot's LMTP server is not installed; the LMTP table has tern alone (Debian package dovecot-lmtpd)"
"$work/bin/deliver" -n "$n" -work "$work/run" -tern "$work/bin/tern-deliver" "$@"
