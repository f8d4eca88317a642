# The README's two commands: `make run` and `make test`. Both set everything up first: in the active virtual
# environment if there is one, else in .venv inside the checkout (made on first use). PYTHON=... picks another.
VENV = .venv
ifeq ($(origin PYTHON), undefined)
  ifdef VIRTUAL_ENV
    PYTHON = python3
  else
    PYTHON = $(VENV)/bin/python
  endif
endif
PIP = $(PYTHON) -m pip
# Every package at the version the tests last passed with (segbench's own dependencies and the test tools):
# `make run` and `make test` install exactly these. Upgrade on purpose with `make lock`, in a commit of its own.
CONSTRAINTS = tests/constraints.txt
PYTEST = OMP_NUM_THREADS=2 $(PYTHON) -m pytest -q --durations=15

.PHONY: install install-test run test quick browser lock

$(VENV)/bin/python:
	python3 -m venv $(VENV)

install: $(filter $(VENV)/bin/python,$(PYTHON))
	$(PIP) install -q -r requirements.txt -c $(CONSTRAINTS)
	$(PIP) install -q --no-deps --no-build-isolation -e .

install-test: install
	$(PIP) install -q -e ".[test,onnx]" -c $(CONSTRAINTS) --no-build-isolation
	@$(MAKE) --no-print-directory browser

# Debian's Chromium for the browser tests; where it cannot be installed those tests say so and are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || ( command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 ) || \
		echo "note: chromium could not be installed; the browser tests will be skipped"

run: install
	$(PYTHON) -m segbench run

# Everything (what CI runs), then the 15 slowest tests.
test: install-test
	$(PYTEST)

# The edit loop: everything but the tests marked slow or browser (under 2 minutes on 2 cores); CI still runs them all.
quick: install-test
	$(PYTEST) -m "not slow and not browser" -x

# Re-resolve every dependency to the newest versions requirements.txt and pyproject.toml allow, in a scratch
# venv, and pin them in $(CONSTRAINTS); then run `make test` and commit the file on its own.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q -r requirements.txt ".[test,onnx]"
	( echo "# Pinned by 'make lock' on $$(date -u +%F) (Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())')): the versions 'make test' installs."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^segbench' ) > $(CONSTRAINTS)
	rm -rf .lock-venv
