# Petrel — build, run, test, install.
#   make run       build, create ./run (a sandbox for you), start it, say how to use it
#   make test      install test tools (apt, when root), lint, build once, run every test
#   make bench     the benchmarks in bench/ (side by side with Postfix when installed)
#   make install   PREFIX=/usr DESTDIR=... : programs, /etc/petrel defaults, man pages
#   make deb       the Debian package (packaging/debian) in target/deb/

CARGO   ?= cargo
PREFIX  ?= /usr/local
DESTDIR ?=
RUN     ?= $(CURDIR)/run
BIN      = $(CURDIR)/target/debug
# Which build `make install` and `make deb` take: release (the default) or debug.
PROFILE ?= release
# Where the programs of $(PROFILE) are: cargo's target directory (CARGO_TARGET_DIR when
# set), or OUT=DIR for programs built elsewhere.
OUT     ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/$(PROFILE)
DEBDIR  ?= $(CURDIR)/target/deb

# Where `make install` puts things. The configuration is always /etc/petrel: it is the
# directory the programs read when no -c or PETREL_CONFIG says otherwise.
SBINDIR   = $(PREFIX)/sbin
BINDIR    = $(PREFIX)/bin
LIBDIR    = $(PREFIX)/lib
DAEMONDIR = $(LIBDIR)/petrel
MANDIR    = $(PREFIX)/share/man
CONFDIR   = /etc/petrel
DAEMONS   = master smtpd cleanup qmgr local smtp pickup showq authd imapd pop3d postdrop

.PHONY: all build release bins run stop test deps lint unit e2e bench clean install uninstall deb

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --workspace --bins --release

# The programs of $(PROFILE), built when cargo is at hand (as root under sudo it may not
# be: then they must have been built before, by `make release`).
bins:
	@if command -v $(CARGO) >/dev/null 2>&1; then \
		$(CARGO) build --workspace --bins --profile $(if $(filter debug,$(PROFILE)),dev,$(PROFILE)); \
	fi
	@for p in petrel sendmail $(DAEMONS); do \
		[ -x $(OUT)/$$p ] || { echo "make: $(OUT)/$$p is missing: run make release first" >&2; exit 1; }; \
	done

# Installs the commands, the daemons, the default configuration (an existing file is kept)
# and the man pages, and nothing else. postdrop becomes set-group-id petrel-drop, the
# users and the spool are made, by `petrel set-permissions`: run here when installing as
# root onto this system, by the package's postinst, or by hand after a DESTDIR install.
install: bins
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(DAEMONDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(CONFDIR)
	install -m 0755 $(OUT)/petrel $(OUT)/sendmail $(DESTDIR)$(SBINDIR)/
	for p in $(DAEMONS); do install -m 0755 $(OUT)/$$p $(DESTDIR)$(DAEMONDIR)/$$p || exit 1; done
	ln -sf ../sbin/sendmail $(DESTDIR)$(BINDIR)/mailq
	ln -sf ../sbin/sendmail $(DESTDIR)$(BINDIR)/newaliases
	ln -sf ../sbin/sendmail $(DESTDIR)$(LIBDIR)/sendmail
	for f in man/*.[158]; do install -m 0644 $$f $(DESTDIR)$(MANDIR)/man$${f##*.}/ || exit 1; done
	for l in sendmail mailq newaliases; do ln -sf petrel-sendmail.1 $(DESTDIR)$(MANDIR)/man1/$$l.1; done
	@for f in petrel.conf services.conf; do \
		t=$(DESTDIR)$(CONFDIR)/$$f; \
		if [ -e $$t ]; then echo "make: kept $$t (the new default is etc/$$f)"; continue; fi; \
		sed -e 's|^daemon_directory = .*|daemon_directory = $(DAEMONDIR)|' \
		    -e 's|^command_directory = .*|command_directory = $(SBINDIR)|' etc/$$f > $$t.tmp && \
		chmod 0644 $$t.tmp && mv $$t.tmp $$t || exit 1; \
	done
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
		$(SBINDIR)/petrel -c $(CONFDIR) set-permissions; \
	else \
		echo "make: now, as root on the target system: $(SBINDIR)/petrel set-permissions"; \
	fi

# Removes what `make install` installed, except the configuration, the spool and users.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/petrel $(DESTDIR)$(SBINDIR)/sendmail \
		$(DESTDIR)$(BINDIR)/mailq $(DESTDIR)$(BINDIR)/newaliases $(DESTDIR)$(LIBDIR)/sendmail
	for p in $(DAEMONS); do rm -f $(DESTDIR)$(DAEMONDIR)/$$p; done
	-rmdir $(DESTDIR)$(DAEMONDIR)
	for f in man/*.[158]; do rm -f $(DESTDIR)$(MANDIR)/man$${f##*.}/$${f#man/}; done
	for l in sendmail mailq newaliases; do rm -f $(DESTDIR)$(MANDIR)/man1/$$l.1; done

# The Debian package, from packaging/debian, with dpkg-buildpackage (debhelper), into
# $(DEBDIR). The programs are built first, outside dpkg-buildpackage's environment.
deb: bins
	rm -rf $(DEBDIR)/src
	mkdir -p $(DEBDIR)/src
	cp -R packaging/debian $(DEBDIR)/src/debian
	cd $(DEBDIR)/src && PETREL_TOP=$(CURDIR) PETREL_PROFILE=$(PROFILE) PETREL_OUT=$(OUT) \
		dpkg-buildpackage --build=binary --no-sign
	@ls $(DEBDIR)/*.deb

run: build
	@if [ ! -f $(RUN)/etc/petrel.conf ]; then $(BIN)/petrel sandbox $(RUN); fi
	@$(BIN)/petrel -c $(RUN)/etc status >/dev/null 2>&1 || $(BIN)/petrel -c $(RUN)/etc start
	@echo
	@echo "Petrel is running in $(RUN) (log: $(RUN)/log/maillog)."
	@printf '%s\n' "  send:   printf 'Subject: hi\\n\\nhello\\n' | $(BIN)/sendmail -C $(RUN)/etc demo@localhost"
	@echo "  read:   ls $(RUN)/home/demo/Maildir/new/"
	@echo "  queue:  $(BIN)/petrel -c $(RUN)/etc queue list"
	@echo "  stop:   make stop"

stop:
	@$(BIN)/petrel -c $(RUN)/etc stop

deps:
	@sh .ci/deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps lint
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

bench: release
	python3 bench/local_submit.py --bin target/release
	python3 bench/smtp_in.py --bin target/release
	python3 bench/smtp_out.py --bin target/release
	python3 bench/imap.py --bin target/release
	python3 bench/pop3.py --bin target/release

clean:
	$(CARGO) clean
