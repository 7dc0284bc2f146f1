#!/bin/sh
# Local delivery, one process per message, tern-deliver beside procmail,
# maildrop and dovecot-lda (each when installed): per-message medians, the
# ratios to tern-deliver, and the fsync calls each makes.
#
#   tests/bench/deliver.sh [N]        N messages per tool (default 2000)
#
# Run as root to deliver as an unprivileged user (uid 65534), as a real
# system would; dovecot-lda refuses to run as root without a userdb.
set -eu
cd "$(dirname "$0")/../.."
n=${1:-2000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-deliver ./tests/bench/deliver
for p in procmail maildrop strace; do
	command -v $p >/dev/null || echo "note: $p is not installed; its row is left out (Debian package $p)"
done
[ -x /usr/lib/dovecot/dovecot-lda ] || echo "note: dovecot-lda is not installed; its row is left out (Debian package dovecot-core)"
"$work/bin/deliver" -n "$n" -work "$work/run" -tern "$work/bin/tern-deliver"
