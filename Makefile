# Petrel — build, run, test, install.
#   make run       build, create ./run (a sandbox for you), start it, say how to use it
#   make test      install test tools (apt, when root), lint, build once, run every test
#   make bench     the benchmarks in bench/ (side by side with Postfix when installed)

CARGO   ?= cargo
PREFIX  ?= /usr/local
DESTDIR ?=
RUN     ?= $(CURDIR)/run
BIN      = $(CURDIR)/target/debug

.PHONY: all build release run stop test deps lint unit e2e bench clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --workspace --bins --release

run: build
	@if [ ! -f $(RUN)/etc/petrel.conf ]; then $(BIN)/petrel sandbox $(RUN); fi
	@$(BIN)/petrel -c $(RUN)/etc status >/dev/null 2>&1 || $(BIN)/petrel -c $(RUN)/etc start
	@echo
	@echo "Petrel is running in $(RUN) (log: $(RUN)/log/maillog)."
	@echo "  send:   printf 'Subject: hi\\n\\nhello\\n' | $(BIN)/sendmail -C $(RUN)/etc demo@localhost"
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
