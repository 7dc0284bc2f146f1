# Drives Debian's dkimpy (python3-dkim) and pyspf (python3-spf) for the
# interop tests in ../interop_test.go: implementations tern did not write.
#   dkim-verify RECORDS.json < message     one line per signature: pass|fail
#   dkim-sign KEY DOMAIN SELECTOR ALGO < message   the signed message
#   spf PORT < lines of "IP SENDER HELO"   pyspf's result for each line,
#                                          asking 127.0.0.1:PORT
#   dkim-bench RECORDS.json N < message   seconds per verification of all
#                                          signatures, start-up excluded
#   spf-bench PORT IP SENDER HELO N       seconds per SPF check
import json
import sys


def dkim_verify(records_path):
    import dkim
    with open(records_path) as f:
        records = json.load(f)

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip('.').lower(), '').encode()

    msg = sys.stdin.buffer.read()
    d = dkim.DKIM(msg)
    n = sum(1 for k, _ in d.headers if k.lower() == b'dkim-signature')
    for i in range(n):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException:
            ok = False
        print('pass' if ok else 'fail')


def dkim_bench(records_path, n):
    import time
    import dkim
    with open(records_path) as f:
        records = json.load(f)

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip('.').lower(), '').encode()

    msg = sys.stdin.buffer.read()
    n = int(n)
    start = time.perf_counter()
    for _ in range(n):
        d = dkim.DKIM(msg)
        sigs = sum(1 for k, _ in d.headers if k.lower() == b'dkim-signature')
        for i in range(sigs):
            if not d.verify(idx=i, dnsfunc=dnsfunc):
                sys.exit('signature %d did not verify' % i)
    print((time.perf_counter() - start) / n)


def spf_bench(port, ip, sender, helo, n):
    import time
    import dns.resolver
    import spf
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ['127.0.0.1']
    r.port = int(port)
    r.lifetime = 2
    dns.resolver.default_resolver = r
    n = int(n)
    start = time.perf_counter()
    for _ in range(n):
        if spf.check2(i=ip, s=sender, h=helo)[0] != 'pass':
            sys.exit('SPF did not pass')
    print((time.perf_counter() - start) / n)


def dkim_sign(key_path, domain, selector, algo):
    import dkim
    with open(key_path, 'rb') as f:
        key = f.read()
    msg = sys.stdin.buffer.read()
    sig = dkim.sign(msg, selector.encode(), domain.encode(), key,
                    canonicalize=(b'relaxed', b'relaxed'),
                    signature_algorithm=algo.encode(),
                    include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
    sys.stdout.buffer.write(sig + msg)


def spf_check(port):
    import dns.resolver
    import spf
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ['127.0.0.1']
    r.port = int(port)
    r.lifetime = 2
    dns.resolver.default_resolver = r
    for line in sys.stdin:
        ip, sender, helo = line.split()
        print(spf.check2(i=ip, s=sender, h=helo)[0])


if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    {'dkim-verify': dkim_verify, 'dkim-sign': dkim_sign, 'spf': spf_check,
     'dkim-bench': dkim_bench, 'spf-bench': spf_bench}[cmd](*args)
