#!/bin/sh
# tests/bench/remote-crash.sh — the long form of TestRemoteCrash: the
# tern-queue daemon SIGKILLed again and again while it has transactions
# open with a slow MX host on loopback, restarted each time, until the
# queue is empty; then every message must have arrived at least once.
# The test's log line gives the kills, how many landed mid-transaction,
# and the duplicates (messages the MX took whose 250 the killed process
# never read).
#
#   sh tests/bench/remote-crash.sh          MESSAGES=500 KILLS=300
#   MESSAGES=2000 KILLS=1000 sh tests/bench/remote-crash.sh
set -eu
cd "$(dirname "$0")/../.."
TERN_CRASH_MESSAGES=${MESSAGES:-500} TERN_CRASH_KILLS=${KILLS:-300} \
	go test ./tests/ -run '^TestRemoteCrash$' -count=1 -v -timeout 60m |
	grep -E 'remote_crash_test|^(--- |ok|FAIL|PASS)'
