# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
# chromium: the headless browser of the UI tests (tests/ui), driven by the Python package playwright
# (a dev extra) through executable_path; no `playwright install`, the browser is Debian's.
# postgresql: the server `delivery up --database postgresql` and the ledger's PostgreSQL tests run.
DEBIAN_PACKAGES := git docker-registry skopeo openssh-client chromium postgresql

.PHONY: test test-faults screenshots demo lint system-deps venv clean bench mutation

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root, or install them)"; fi; \
	fi

# Installs come from a wheelhouse in the user's cache, without the index: pip's resolution against the index
# (about 130 projects, pages of thousands of files each) takes about 45 s even with every download cached.
# When the wheelhouse lacks something (first run, a new dependency), it is filled from the index, once.
# The venv's own pip, setuptools and wheel come from it too, installed by the system's pip (ensurepip: ~6 s).
WHEELHOUSE ?= $(HOME)/.cache/gitops-delivery/wheels
# pulumi_azure_native is 356 MB of Python, loaded lazily: only the packages infra/ imports are compiled ahead.
NOT_COMPILED := pulumi_azure_native/(?!(__init__|_utilities|config|provider|containerregistry|containerservice|operationalinsights|resources)\b)
REQUIREMENTS := .[dev] pip setuptools>=68 wheel

$(STAMP): pyproject.toml
	@set -f; if python3 -m pip --version >/dev/null 2>&1; then \
	  test -x $(PY) || python3 -m venv --without-pip $(VENV); pip="python3 -m pip --python $(PY)"; \
	else test -x $(PY) || python3 -m venv $(VENV); pip="$(PY) -m pip"; fi; \
	offline="$$pip install -q --no-compile --no-index --find-links $(WHEELHOUSE) -e $(REQUIREMENTS)"; \
	$$offline 2>/dev/null || { echo "filling the wheelhouse $(WHEELHOUSE) from the package index"; \
	  $$pip wheel -q -w $(WHEELHOUSE) $(REQUIREMENTS) && $$offline; }
	@# byte-compiled on both cores (pip compiles on one); a file some package ships in an old syntax is skipped
	@$(PY) -m compileall -q -j 0 -x '$(NOT_COMPILED)' $(VENV)/lib >/dev/null || true
	@rm -f $(VENV)/.installed-*; touch $@

# The project's own modules compiled too: with PYTHONDONTWRITEBYTECODE set, each process (every flow run) would
# compile them again (~0.5 s a start). A stale file is only recompiled in memory, never wrong.
venv: system-deps $(STAMP)
	@$(PY) -m compileall -q -j 0 delivery cli kube_simulator flows tasks blocks infra >/dev/null

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The fault-injection suite alone (part of `make test`): crashes at every stage, recovery, retry/cancel, replay.
test-faults: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest -q tests/faults $(PYTEST_ARGS)

# The UI tests again, keeping the pages the README shows in docs/ui/ (commit them when the UI changes).
screenshots: venv
	DELIVERY_UI_SCREENSHOTS=$(CURDIR)/docs/ui PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest -q tests/ui $(PYTEST_ARGS)

demo: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/delivery demo

# Every bench prints its figures with the machine line of bench/_machine.py; bench/_*.py are helpers, not run.
bench: venv
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Mutation run of the decision rules (approvals, policy gates, plan state machine) and of the drift
# check's (comparison with Git, field paths, field ownership, sync-state moves; [tool.mutmut] in
# pyproject.toml) against their pure unit tests; not part of `make test`. Prints killed / total per
# module and killed / non-equivalent, the equivalent survivors being those bench/mutation-survivors.md
# names; fails when a module kills under MUTATION_MIN % of its non-equivalent mutants.
MUTATION_JOBS ?= 2
MUTATION_MIN ?= 95
mutation: venv
	rm -rf mutants && mkdir mutants
	@echo "mutmut run (log: mutants/run.log)"
	@$(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) >mutants/run.log 2>&1 || { tail -n 40 mutants/run.log; exit 1; }
	@$(VENV)/bin/mutmut results --all true | awk -v min=$(MUTATION_MIN) \
	  -v equivalent="$$(grep -oE 'delivery\.[^ `|]+__mutmut_[0-9]+' bench/mutation-survivors.md | tr '\n' ' ')" ' \
	  BEGIN { split(equivalent, names, " "); for (i in names) eq[names[i]] = 1 } \
	  { name = $$1; sub(/:$$/, "", name); status = $$0; sub(/^[^:]*: /, "", status); split(name, part, "."); \
	    m = part[2]; total[m]++; \
	    if (status == "killed" || status == "timeout") killed[m]++; \
	    else if (name in eq) equiv[m]++; \
	    else printf "  %s: %s (not listed as equivalent)\n", name, status } \
	  END { bad = 0; for (m in total) { live = total[m] - equiv[m]; score = live ? 100 * killed[m] / live : 100; \
	    printf "%-16s killed %3d / %3d (%5.1f %%); equivalent %2d; killed / non-equivalent %3d / %3d (%5.1f %%)\n", \
	      m, killed[m], total[m], 100 * killed[m] / total[m], equiv[m], killed[m], live, score; \
	    if (score < min) bad = 1 } exit bad }'

clean:
	rm -rf .delivery
