#!/bin/sh
# tests/bench/deliverer.sh — tern-queue --once over N queued local
# messages, with a tern-deliver per recipient (--local-delivery exec) and
# with a deliverer kept per uid (--local-delivery lmtp), side by side on
# the same disk: wall time and CPU per message (tern-queue and every
# process it waited for), median of R runs each, and the ratios.
#
#   sh tests/bench/deliverer.sh            N=5000 U=10 R=3
#
# Run as root, the accounts get uid 65534 so that both ways deliver as
# the account; as another user, both run as that user.
set -eu
cd "$(dirname "$0")/../.."

N=${N:-5000}
U=${U:-10}
R=${R:-3}
command -v python3 >/dev/null 2>&1 || { echo "deliverer.sh: needs python3 (Debian package python3)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tern-deliverer-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
chmod 755 "$work"
CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o "$work/bin/" ./cmd/tern-enqueue ./cmd/tern-queue ./cmd/tern-deliver ./cmd/tern-lmtpd
mkdir -p "$work/etc" "$work/home"
echo example.org > "$work/etc/domains"
echo mx.example.org > "$work/etc/hostname"
uid=
[ "$(id -u)" = 0 ] && uid=65534
i=0
while [ $i -lt "$U" ]; do
	mkdir -p "$work/home/u$i"
	echo "u$i@example.org:{PLAIN}x:$uid:$uid::$work/home/u$i::" >> "$work/etc/users"
	i=$((i + 1))
done
[ -n "$uid" ] && chown -R "$uid:$uid" "$work/home"
{
	printf 'From: bench@example.org\nSubject: bench\n\n'
	head -c 2000 /dev/zero | tr '\0' 'x' | fold -w 72
	printf '\n'
} > "$work/msg"

python3 - "$work" "$N" "$U" "$R" <<'PY'
import os, resource, shutil, statistics, subprocess, sys, time
work, n, users, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bin_ = os.path.join(work, "bin")
env = dict(os.environ, TERN_CONF=os.path.join(work, "etc"), TERN_QUEUE=os.path.join(work, "spool"))
msg = open(os.path.join(work, "msg"), "rb").read()

def fill():
    shutil.rmtree(env["TERN_QUEUE"], ignore_errors=True)
    os.makedirs(env["TERN_QUEUE"])
    # Four injectors at a time; not timed.
    procs = []
    for i in range(n):
        p = subprocess.Popen([os.path.join(bin_, "tern-enqueue"), "-f", "bench@example.org", "--", "u%d@example.org" % (i % users)],
                             stdin=subprocess.PIPE, env=env)
        p.stdin.write(msg); p.stdin.close()
        procs.append(p)
        if len(procs) >= 4:
            if procs.pop(0).wait() != 0:
                sys.exit("tern-enqueue failed")
    for p in procs:
        if p.wait() != 0:
            sys.exit("tern-enqueue failed")

def delivered():
    c = 0
    for u in range(users):
        d = os.path.join(work, "home", "u%d" % u, "Maildir", "new")
        if os.path.isdir(d):
            c += len(os.listdir(d))
    return c

def run(mode):
    for u in range(users):
        shutil.rmtree(os.path.join(work, "home", "u%d" % u, "Maildir"), ignore_errors=True)
    fill()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run([os.path.join(bin_, "tern-queue"), "--once", "--local-delivery", mode],
                   env=env, check=True, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    got = delivered()
    if got != n:
        sys.exit("%s: %d of %d messages delivered" % (mode, got, n))
    return wall, cpu / n * 1000

res = {"exec": [], "lmtp": []}
for r in range(runs):
    for mode in ("exec", "lmtp"):
        res[mode].append(run(mode))
print("deliverer.sh: tern-queue --once over %d queued messages of %d bytes to %d accounts, %d runs each, medians" % (n, len(msg), users, runs))
med = {}
for mode in ("exec", "lmtp"):
    wall = statistics.median(w for w, _ in res[mode])
    cpu = statistics.median(c for _, c in res[mode])
    med[mode] = (wall, cpu)
    print("  %-5s wall %6.2f s  %7.0f msg/s  CPU %5.3f ms/msg   runs: %s" % (mode, wall, n / wall, cpu,
          ", ".join("%.2fs/%.3fms" % x for x in res[mode])))
print("  lmtp/exec: %.2fx the messages a second, %.2fx the CPU a message" % (med["exec"][0] / med["lmtp"][0], med["lmtp"][1] / med["exec"][1]))
PY
