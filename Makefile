# The README's two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install install-test run test browser

install:
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .

install-test: install
	$(PIP) install -q -e ".[test]" --no-build-isolation
	@$(MAKE) --no-print-directory browser

# Debian's Chromium for the browser test; where it cannot be installed the test says so and is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || ( command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 ) || \
		echo "note: chromium could not be installed; the browser test will be skipped"

run: install
	$(PYTHON) -m segbench run

test: install-test
	OMP_NUM_THREADS=2 $(PYTHON) -m pytest -q
