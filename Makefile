# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
DEBIAN_PACKAGES := git docker-registry skopeo openssh-client

.PHONY: test test-faults demo lint system-deps venv clean bench

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root, or install them)"; fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: system-deps $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The fault-injection suite alone (part of `make test`): crashes at every stage, recovery, retry/cancel, replay.
test-faults: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest -q tests/faults $(PYTEST_ARGS)

demo: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/delivery demo

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .delivery
