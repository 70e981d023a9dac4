# tagstat: the two commands of the README, and install/uninstall for lab admins.
#   make demo    set up, run a collector and tagstatd on a simulated Time Tagger ~15 s,
#                uploading to it; show the report and what the collector received
#   make check   set up, lint, and run the tests (both tiers)

# Debian's own interpreter sees python3-gi (umockdev's bindings) through
# --system-site-packages; any other Python 3.11+ runs everything else.
PYTHON ?= $(shell /usr/bin/python3 -c 'import ensurepip, sys; assert sys.version_info >= (3, 11)' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_HOME ?= demo-home
DEMO_SECONDS ?= 15
DEMO_UPLOAD_S ?= 5

.PHONY: setup demo check lint test test-umockdev clean install uninstall

$(BIN)/tagstatd: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/tagstatd

demo: setup
	@rm -rf $(DEMO_HOME) && mkdir -p $(DEMO_HOME)
	@echo "== tagstat-collector serve: a collector on 127.0.0.1, on a free port"
	@$(BIN)/tagstat-collector serve --host 127.0.0.1 --port 0 --db $(DEMO_HOME)/collector.db > $(DEMO_HOME)/collector.url 2> $(DEMO_HOME)/collector.log & echo $$! > $(DEMO_HOME)/collector.pid
	@until grep -q listening $(DEMO_HOME)/collector.url; do sleep 0.1; done; cat $(DEMO_HOME)/collector.url
	@echo "== tagstatd --simulate on a simulated Time Tagger Ultra for $(DEMO_SECONDS) s, a report every $(DEMO_UPLOAD_S) s"
	@TAGSTAT_UPLOAD_URL=$$(sed -n 's/^listening on //p' $(DEMO_HOME)/collector.url) TAGSTAT_UPLOAD_INTERVAL_S=$(DEMO_UPLOAD_S) \
		$(BIN)/tagstatd --home $(DEMO_HOME) --simulate 2> $(DEMO_HOME)/tagstatd.log & echo $$! > $(DEMO_HOME)/tagstatd.pid
	@until $(BIN)/tagstat --home $(DEMO_HOME) status > /dev/null 2>&1; do sleep 0.1; done
	@echo "== tagstat status collecting-and-uploading"; $(BIN)/tagstat --home $(DEMO_HOME) status collecting-and-uploading
	@sleep $(DEMO_SECONDS)
	@echo "== tagstat status"; $(BIN)/tagstat --home $(DEMO_HOME) status
	@echo "== tagstat devices"; $(BIN)/tagstat --home $(DEMO_HOME) devices
	@echo "== tagstat sessions"; $(BIN)/tagstat --home $(DEMO_HOME) sessions
	@echo "== tagstat report (what the next upload would hold so far)"; $(BIN)/tagstat --home $(DEMO_HOME) report
	@echo "== tagstat uploads"; $(BIN)/tagstat --home $(DEMO_HOME) uploads
	@kill -TERM $$(cat $(DEMO_HOME)/tagstatd.pid); while kill -0 $$(cat $(DEMO_HOME)/tagstatd.pid) 2>/dev/null; do sleep 0.1; done
	@echo "== what the collector received (GET /v1/reports), after tagstatd's last report at its stop"
	@$(BIN)/python -c "import requests, sys; [print(r['received_at'], r['kind'], r['report_id'], r['size_bytes'], 'bytes') for r in requests.get(sys.argv[1] + '/v1/reports', timeout=5).json()['reports']]" \
		$$(sed -n 's/^listening on //p' $(DEMO_HOME)/collector.url)
	@echo "== tagstat-collector stats"; $(BIN)/tagstat-collector stats --db $(DEMO_HOME)/collector.db
	@kill -TERM $$(cat $(DEMO_HOME)/collector.pid); while kill -0 $$(cat $(DEMO_HOME)/collector.pid) 2>/dev/null; do sleep 0.1; done
	@echo "== tagstatd log"; cat $(DEMO_HOME)/tagstatd.log

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup
	$(BIN)/python -m pytest -m "not umockdev" -q

# The same driver tests through real libusb against umockdev-emulated devices.
# Under CI the tier must run, not quietly skip: available() names what is missing.
test-umockdev: setup
	@if command -v umockdev-wrapper >/dev/null; then \
		if [ "$${CI:-}" = true ]; then umockdev-wrapper $(BIN)/python -c \
			"import sys; from tagstat.drivers.sim.umockdev import available; sys.exit(available())"; fi; \
		umockdev-wrapper $(BIN)/python -m pytest -m umockdev -q -p no:cacheprovider tests/drivers; \
	else \
		echo "umockdev-wrapper not found: apt-get install umockdev gir1.2-umockdev-1.0 python3-gi"; \
		$(BIN)/python -m pytest -m umockdev -q tests/drivers; \
	fi

check: lint test test-umockdev

# -- for lab admins: the system service (docs/ADMIN.md) -------------------------
# make install [DESTDIR=...] [PREFIX=/opt/tagstat] [LIBDIR=/usr/local/lib] ...
# make uninstall [PURGE=1]   PURGE=1 also removes /etc/tagstat and /var/lib/tagstat
# Both run systemd/install.sh, which says what goes where.
install uninstall:
	PYTHON=$(PYTHON) sh systemd/install.sh $@

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .ruff_cache .hypothesis
