# edgeconv: the README's two commands are `make demo` and `make test`; both run `make setup`.
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.edgeconv-installed
SETUP_DEPS := pyproject.toml constraints.txt scripts/setup.sh scripts/fetch_ort_headers.sh \
              scripts/fetch_arm_runtime.sh scripts/ort120_venv.sh \
              $(shell find custom_ops -type f 2>/dev/null)
PYTEST_ARGS ?=

# The editable install records which Python files exist: reinstall when a file is added or removed.
PYFILES    := $(VENV)/.edgeconv-pyfiles
$(shell mkdir -p $(VENV); find edgeconv exporters models -name '*.py' | sort > $(PYFILES).new; \
        cmp -s $(PYFILES).new $(PYFILES) || mv $(PYFILES).new $(PYFILES); rm -f $(PYFILES).new)

.PHONY: setup test test-all demo sanitize bench clean

setup: $(STAMP)

$(STAMP): $(SETUP_DEPS) $(PYFILES)
	bash scripts/setup.sh
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/edgeconv deploy -o deploy-report

sanitize: setup
	bash scripts/sanitize.sh

bench: setup
	$(PY) -m edgeconv.bench kernels
	$(PY) -m edgeconv.bench tvm

clean:
	rm -rf build deploy-report bench-results
