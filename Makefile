# edgeconv: the README's two commands are `make demo` and `make test`; both run `make setup`.
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.edgeconv-installed
SETUP_DEPS := pyproject.toml constraints.txt scripts/setup.sh scripts/fetch_ort_headers.sh \
              scripts/fetch_arm_runtime.sh scripts/ort120_venv.sh \
              $(shell find custom_ops -type f 2>/dev/null)
PYTEST_ARGS ?=
# fuzz campaigns (tests/custom_ops/fuzz_kernels.py): number of cases and seed
N          ?= 2000
SEED       ?= 0

# The editable install records which Python files exist: reinstall when a file is added or removed.
PYFILES    := $(VENV)/.edgeconv-pyfiles
$(shell mkdir -p $(VENV); find edgeconv exporters models -name '*.py' | sort > $(PYFILES).new; \
        cmp -s $(PYFILES).new $(PYFILES) || mv $(PYFILES).new $(PYFILES); rm -f $(PYFILES).new)

.PHONY: setup test test-all demo sanitize fuzz fuzz-asan bench clean

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

# Seeded fuzz campaign against libedgeconv_ort (release build / ASan+UBSan build); prints the table.
fuzz: setup
	$(PY) tests/custom_ops/fuzz_kernels.py --cases $(N) --seed $(SEED)

fuzz-asan: setup
	bash scripts/sanitize.sh --fuzz --cases $(N) --seed $(SEED)

bench: setup
	$(PY) -m edgeconv.bench kernels
	$(PY) -m edgeconv.bench tvm

clean:
	rm -rf build deploy-report bench-results
