# lamina — every target sets up what it needs on a fresh machine and reuses
# what an earlier run built.

# Debian's interpreter, not a per-user one: the unprivileged test run must be
# able to execute it (a pyenv under /root is unreachable for `nobody`).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
SYSDEPS := $(VENV)/.system-deps-stamp
BUILDDEPS := $(VENV)/.build-deps-stamp
export CARGO_TERM_QUIET ?= true

.PHONY: all demo test build check lint fmt test-rust test-unit test-unit-unprivileged \
        test-integration test-docker bench fuzz torture clean

all: build

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(PY) requirements-dev.txt
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Debian packages the Rust build needs (nasm and autotools for ISA-L).
$(BUILDDEPS): scripts/build-deps.sh scripts/need.sh | $(PY)
	bash scripts/build-deps.sh
	touch $@

# Debian packages the tests and benchmarks use as oracles (debootstrap, xfs,
# attr/acl tools). Installed once; a second run only checks.
$(SYSDEPS): scripts/system-deps.sh scripts/need.sh | $(PY)
	bash scripts/system-deps.sh
	touch $@

build: $(DEPS) $(BUILDDEPS)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

demo: build
	$(PY) -m lamina demo

test: build $(SYSDEPS) lint test-rust test-unit test-unit-unprivileged test-integration

test-rust: $(BUILDDEPS)
	cargo test --quiet

test-unit: build
	$(PY) -m pytest -q tests/unit

# The same unit suite as an unprivileged user (no CAP_*, uid nobody).
test-unit-unprivileged: build
	bash tests/run_unprivileged.sh

# Mounting tests run in a throwaway "privileged container": own mount + pid
# namespace, private propagation; a mount left behind fails the run.
test-integration: build $(SYSDEPS)
	bash tests/run_integration.sh

# The same integration suite inside a real Docker container, run by the
# project's own engine (tests/support/engine.py; docker.io from system-deps).
test-docker: build $(SYSDEPS)
	bash tests/run_docker.sh

bench: build $(SYSDEPS)
	$(PY) bench/run.py

# Crash torture at full count: 250 trials per driver, each a writer killed
# at a crash point drawn from the seed, the store checked after.
TORTURE_TRIALS ?= 250
torture: build $(SYSDEPS)
	LAMINA_TORTURE_TRIALS=$(TORTURE_TRIALS) bash tests/run_integration.sh tests/integration/test_torture.py

# cargo-fuzz targets (nightly + libFuzzer), each for FUZZ_SECONDS, seeded
# from the adversarial corpus; crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= apply reassemble whiteouts reader
fuzz: $(DEPS) $(BUILDDEPS)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	$(PY) fuzz/seed.py
	mkdir -p /dev/shm/lamina-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  LAMINA_FUZZ_TMP=/dev/shm/lamina-fuzz cargo +nightly fuzz run -O $$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 || exit 1; \
	done

lint: $(DEPS) $(BUILDDEPS)
	cargo fmt --check
	cargo clippy --quiet --all-targets --features python -- -D warnings
	$(VENV)/bin/ruff check python tests bench fuzz examples
	$(VENV)/bin/ruff format --check python tests bench fuzz examples
	$(VENV)/bin/mypy --strict python/lamina examples

fmt: $(DEPS)
	cargo fmt
	$(VENV)/bin/ruff format python tests bench fuzz examples

clean:
	rm -rf $(VENV) target
