# make demo  -- set up and run the demo (hakeeper demo: a sample configuration, a live node, a live cluster)
# make test  -- set up and run lint and the whole test suite
#
# Both create .venv (or refresh it when pyproject.toml changes) and, when run
# as root, install the Debian packages the tests need with apt-get.
#
# make install    -- install hakeeper on this machine (docs/deploy.md): a venv in $(PREFIX) holding the
#                    wheel (built from this checkout, or WHEEL=FILE), its commands linked into $(SBINDIR),
#                    the systemd units in $(UNITDIR), $(CONFDIR)/hakeeper.toml.example
# make uninstall  -- remove all that again; the state directory and $(CONFDIR)/hakeeper.toml stay
#
# Each directory can be changed (make install PREFIX=/srv/hakeeper ...). The venv works where it was
# made (a venv cannot be moved), so there is no DESTDIR: to package hakeeper, ship the wheel.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PREFIX  ?= /opt/hakeeper
SBINDIR ?= /usr/local/sbin
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/hakeeper
WHEEL   ?=
INSTALL_DIRS = --sbindir '$(SBINDIR)' --unitdir '$(UNITDIR)' --confdir '$(CONFDIR)'
STAMP  := $(VENV)/.installed
# Debian packages the suite and the benchmarks need (fuse3 libfuse3-3: the replication volume, libfuse 3.14.0;
# e2fsprogs: mkfs.ext4 and e2fsck on it).
DEB_PACKAGES := iproute2 sqlite3 resource-agents nftables util-linux procps fence-agents bind9 bind9-dnsutils keepalived gcc libc6-dev fuse3 libfuse3-3 e2fsprogs

.PHONY: demo test lint unit integration bench deps venv clean install uninstall

demo: venv
	$(BIN)/hakeeper demo

test: venv deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

bench: venv
	$(BIN)/python bench/lcd_scale.py
	$(BIN)/python bench/hierarchy_scale.py
	$(BIN)/python bench/local_recovery.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/dns_restore.py
	$(BIN)/python bench/ip_kit.py
	$(BIN)/python bench/cli_latency.py
	$(BIN)/python bench/mirror_throughput.py

# The wheel is built in a temporary directory with the new venv's own pip (no pip needed besides
# python3-venv); pip then installs it with its dependencies. The second pip run replaces a hakeeper
# of the same version, which the first one would keep.
install:
	@set -e; \
	test -x '$(PREFIX)/bin/python' || $(PYTHON) -m venv '$(PREFIX)'; \
	wheel='$(WHEEL)'; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if [ -z "$$wheel" ]; then \
		echo "building the wheel"; \
		mkdir "$$tmp/src" && cp -r pyproject.toml README.md src "$$tmp/src/"; \
		'$(PREFIX)/bin/python' -m pip wheel -q --no-deps -w "$$tmp" "$$tmp/src"; \
		wheel=$$(ls "$$tmp"/hakeeper-*.whl); \
	fi; \
	echo "installing $$wheel into $(PREFIX)"; \
	'$(PREFIX)/bin/python' -m pip install -q "$$wheel"; \
	'$(PREFIX)/bin/python' -m pip install -q --no-deps --force-reinstall "$$wheel"; \
	'$(PREFIX)/bin/python' -m hakeeper.install $(INSTALL_DIRS)

uninstall:
	@if [ -x '$(PREFIX)/bin/python' ]; then \
		'$(PREFIX)/bin/python' -m hakeeper.install --uninstall --venv $(INSTALL_DIRS); \
	else \
		echo "no hakeeper venv in $(PREFIX): nothing to uninstall"; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Install missing Debian packages when root; otherwise say what the tests will skip.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "not root: Debian packages missing ($$missing); tests that need them will skip"; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .hypothesis
