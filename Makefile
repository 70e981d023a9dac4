# tagstat: the two commands of the README, and install/uninstall for lab admins.
#   make demo    set up, run tagstatd on a simulated Time Tagger ~15 s, show its report
#   make check   set up, lint, and run the tests (both tiers)

# Debian's own interpreter sees python3-gi (umockdev's bindings) through
# --system-site-packages; any other Python 3.11+ runs everything else.
PYTHON ?= $(shell /usr/bin/python3 -c 'import ensurepip, sys; assert sys.version_info >= (3, 11)' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_HOME ?= demo-home
DEMO_SECONDS ?= 15

.PHONY: setup demo check lint test test-umockdev clean

$(BIN)/tagstatd: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/tagstatd

demo: setup
	@rm -rf $(DEMO_HOME) && mkdir -p $(DEMO_HOME)
	@echo "== tagstatd --simulate on a simulated Time Tagger Ultra for $(DEMO_SECONDS) s"
	@$(BIN)/tagstatd --home $(DEMO_HOME) --simulate 2> $(DEMO_HOME)/tagstatd.log & echo $$! > $(DEMO_HOME)/tagstatd.pid
	@sleep $(DEMO_SECONDS)
	@echo "== tagstat status"; $(BIN)/tagstat --home $(DEMO_HOME) status
	@echo "== tagstat devices"; $(BIN)/tagstat --home $(DEMO_HOME) devices
	@echo "== tagstat sessions"; $(BIN)/tagstat --home $(DEMO_HOME) sessions
	@echo "== tagstat report"; $(BIN)/tagstat --home $(DEMO_HOME) report
	@kill -TERM $$(cat $(DEMO_HOME)/tagstatd.pid); while kill -0 $$(cat $(DEMO_HOME)/tagstatd.pid) 2>/dev/null; do sleep 0.1; done
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

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .ruff_cache .hypothesis
