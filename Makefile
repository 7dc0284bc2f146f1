# tern — build, test, install, and a demo on loopback.
#
#   make                 build every program into ./bin
#   make test            the whole test suite (unit, fuzz seeds, end to end),
#                        then the skipped tests and why
#   make run             a demo: the suite on loopback ports with a demo account
#   make install PREFIX=/usr/local DESTDIR=   also makes the queue, /var/spool/tern
#   make check           what CI checks besides the tests: vet, gofmt, staticcheck,
#                        the man pages with mandoc and groff

PREFIX  ?= /usr/local
DESTDIR ?=
# The queue (tern-queue(5)); install makes it when it is missing.
QUEUEDIR ?= /var/spool/tern
# Where build puts the programs and install takes them from.
BUILDDIR ?= bin
GO      ?= go
# Static binaries without urfave/cli's man-page generator: a delivery agent
# is started once per message, and dynamic linking and the markdown
# package's init are paid by every start (tests/bench/deliver.sh).
export CGO_ENABLED ?= 0
export GOFLAGS += -tags=urfave_cli_no_docs
BINDIR   = $(DESTDIR)$(PREFIX)/bin
SBINDIR  = $(DESTDIR)$(PREFIX)/sbin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man

# Daemons and agents go to sbin, tools for people and scripts to bin.
SBIN_PROGS = $(filter tern-deliver tern-lmtpd tern-enqueue tern-queue tern-smtpd tern-pop3d tern-imapd,$(notdir $(wildcard cmd/*)))
BIN_PROGS  = $(filter-out $(SBIN_PROGS),$(notdir $(wildcard cmd/*)))
MANPAGES   = $(wildcard man/*.[1-8])

.PHONY: all build test run install check clean

all: build

build:
	@mkdir -p $(BUILDDIR)
	$(GO) build -o $(BUILDDIR)/ ./cmd/...

# gotestsum runs go test and, after it, lists every skipped test with its
# reason (go test ./... hides the SKIP lines of passing packages); its exit
# status is go test's.
GOTESTSUM = $(GO) run gotest.tools/gotestsum@v1.13.0

test:
	$(GOTESTSUM) --format pkgname --format-hide-empty-pkg -- -shuffle=on ./...

run: build
	sh contrib/run-demo.sh

check:
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt: these files need formatting:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	mandoc -Tlint -Wwarning $(MANPAGES)
	@# Debian's man renders with groff, which reads some mdoc differently
	@# from mandoc (a title starting with a macro's name drops a section).
	@fail=; for m in $(MANPAGES); do \
		out=$$(groff -mandoc -Tutf8 -ww -z $$m 2>&1); \
		if [ -n "$$out" ]; then echo "groff: $$m:"; echo "$$out"; fail=1; fi; \
	done; [ -z "$$fail" ]

install: build
	install -d $(BINDIR) $(SBINDIR)
	for p in $(BIN_PROGS); do install -m 0755 $(BUILDDIR)/$$p $(BINDIR)/$$p; done
	for p in $(SBIN_PROGS); do install -m 0755 $(BUILDDIR)/$$p $(SBINDIR)/$$p; done
	# tern-enqueue answers to sendmail and mailq by its argv[0]; relative
	# links work inside DESTDIR too.
	if [ -x $(BUILDDIR)/tern-enqueue ]; then \
		ln -sf tern-enqueue $(SBINDIR)/sendmail; \
		ln -sf ../sbin/tern-enqueue $(BINDIR)/mailq; \
	fi
	for m in $(MANPAGES); do s=$${m##*.}; install -d $(MANDIR)/man$$s; install -m 0644 $$m $(MANDIR)/man$$s/; done
	# man sendmail and man mailq find tern-enqueue(8), where both are described.
	install -d $(MANDIR)/man1
	ln -sf tern-enqueue.8 $(MANDIR)/man8/sendmail.8
	ln -sf ../man8/tern-enqueue.8 $(MANDIR)/man1/mailq.1
	# The queue, with the modes of tern-queue(5): incoming/ open to every
	# local submitter (sticky, not listable), the rest tern-queue's alone.
	@q=$(DESTDIR)$(QUEUEDIR); \
	if [ -d $$q ]; then echo "queue: $$q is there; left as it is"; else \
		install -d -m 0755 $$q && \
		install -d -m 1733 $$q/incoming && \
		install -d -m 0700 $$q/mess $$q/env $$q/bad && \
		echo "queue: made $$q (incoming/ 1733; mess/, env/, bad/ 0700)"; \
	fi

clean:
	rm -rf $(BUILDDIR) run
