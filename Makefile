# Thin wrapper over CMake. `make run` and `make test` do all the set-up on a
# fresh Debian 12 machine (they install missing packages when run as root).

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
LISTEN     ?= 127.0.0.1:8080
# `make cluster`: the first of three instance ports and of three Redis ports.
CLUSTER_PORT       ?= 8081
CLUSTER_REDIS_PORT ?= 6391
DB         ?= ./cronfence.db
FUZZ_SECONDS ?= 30
MINUTES    ?= 10
PYTHON     ?= /usr/bin/python3

# What `make build` needs (python3-yaml turns api/openapi.yaml into the JSON the binary
# serves); docker/Dockerfile's build stage installs these with `make build-deps`.
BUILD_PACKAGES = build-essential cmake pkg-config libmicrohttpd-dev libjansson-dev \
	libhiredis-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libcriterion-dev libyaml-dev \
	python3 python3-yaml
# What the tests, the sanitized and fuzzing builds and the dashboard's tests need on top.
TEST_PACKAGES = clang libclang-rt-14-dev clang-format redis-server tzdata curl sqlite3 \
	python3-pytest nodejs chromium golang-go faketime
PACKAGES = $(BUILD_PACKAGES) $(TEST_PACKAGES)
# What `make cluster` needs on top of the build: the lock nodes and the script that runs them.
CLUSTER_PACKAGES = redis-server python3
# What `make container-test` needs: podman with runc (DESIGN: no registry here, so the base
# image is made by debootstrap), podman-compose to run docker/compose.yaml.
CONTAINER_PACKAGES = podman runc debootstrap podman-compose curl
# The two programs; `make build` builds the test programs too, `make binaries` only these.
BINARIES = cronfence cronfence-receiver

.PHONY: all build binaries deps build-deps run cluster cluster-restart container-deps container-test test unit integration contract-deps contract-lint \
	e2e e2e-deps fuzz asan chaos bench bench-deps format check-format clean

all: build

# $(call install_missing,PACKAGES): installs those of the Debian packages that are missing
# (root only; others are told what to install).
install_missing = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:" $$missing; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "missing packages (install them as root):" $$missing; exit 1; \
		fi; \
	fi

deps:
	@$(call install_missing,$(PACKAGES))

build-deps:
	@$(call install_missing,$(BUILD_PACKAGES))

build: build-deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

binaries: build-deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS) --target $(BINARIES)

# In the foreground until Ctrl-C: use a second terminal for curl.
run: binaries
	$(BUILD)/cronfence --listen $(LISTEN) --db $(DB)

# Three Redis lock nodes and three instances on loopback, in the foreground until Ctrl-C
# (data in cluster-data/). An instance that exits is reported and the others go on;
# `make cluster-restart N=1` (from a second terminal) starts instance 1 again.
cluster: binaries
	@$(call install_missing,$(CLUSTER_PACKAGES))
	$(PYTHON) tests/tools/local_cluster.py --bin-dir $(BUILD) --dir cluster-data \
		--port $(CLUSTER_PORT) --redis-port $(CLUSTER_REDIS_PORT)

cluster-restart:
	$(PYTHON) tests/tools/local_cluster.py --dir cluster-data --restart $(N)

# Builds the image with podman from a Debian 12 base made by debootstrap, runs
# docker/compose.yaml with podman-compose and checks /healthz, a trusted quorum
# and one delivery per slot (tests/tools/container_test.sh; work in $(BUILD)/container).
container-deps:
	@$(call install_missing,$(CONTAINER_PACKAGES))

container-test: container-deps
	tests/tools/container_test.sh $(BUILD)/container

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCF_SANITIZE=ON -DCF_WERROR=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# Unit tests, integration tests and the dashboard's end-to-end tests, each on
# the plain and on the sanitized build, then the fuzzers.
test: build asan
	ctest --test-dir $(BUILD) --output-on-failure
	@# Criterion runs tests in worker processes whose sanitizer reports do not
	@# fail the test, so the whole output is searched for them too.
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(ASAN_BUILD) -V >$(ASAN_BUILD)/unit.log 2>&1 \
		|| { tail -100 $(ASAN_BUILD)/unit.log; exit 1; }
	@if grep -nE "ERROR: (Address|Leak)Sanitizer|runtime error:" $(ASAN_BUILD)/unit.log; then \
		echo "sanitizer reports in unit tests, see $(ASAN_BUILD)/unit.log"; exit 1; fi
	@grep -E "Synthesis|tests passed" $(ASAN_BUILD)/unit.log
	$(MAKE) --no-print-directory contract-lint
	$(call integration_run,$(BUILD))
	$(call integration_run,$(ASAN_BUILD),CRONFENCE_SANITIZED=1)
	$(call chaos_run,3)
	$(MAKE) --no-print-directory e2e-deps
	$(call e2e_run,$(BUILD))
	$(call e2e_run,$(ASAN_BUILD),CRONFENCE_SANITIZED=1)
	$(MAKE) --no-print-directory fuzz

# The chaos run (tests/chaos/README.md): 3 Redis nodes and 3 instances of the
# sanitized build under a fault every 10 s for MINUTES, then a check of G1-G7,
# the convergence of the histories and every expected slot; any violation fails.
# The checker's own test runs first. Logs, databases and report: build-asan/chaos.
# $(call chaos_run,MINUTES)
chaos_run = $(PYTHON) -m pytest -q -p no:cacheprovider tests/chaos/test_check.py && \
	$(PYTHON) tests/chaos/run.py --bin-dir $(ASAN_BUILD) --minutes $(1) --out $(ASAN_BUILD)/chaos

chaos: asan
	$(call chaos_run,$(MINUTES))

# The dashboard in Debian's headless Chromium, driven by playwright-core and
# checked by axe-core (both from npm, pinned in tests/e2e/package-lock.json);
# Screenshots of every page land in <build folder>/e2e-artifacts.
# $(call e2e_run,BUILD_FOLDER[,MORE_ENVIRONMENT])
e2e_run = ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	CRONFENCE_BIN_DIR=$(abspath $(1)) E2E_ARTIFACTS=$(abspath $(1))/e2e-artifacts $(2) \
	node --test --test-concurrency=1 tests/e2e/

e2e-deps: deps
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq npm; }
	npm --prefix tests/e2e ci --no-audit --no-fund --loglevel=error

e2e: build e2e-deps
	$(call e2e_run,$(BUILD))

unit: build
	ctest --test-dir $(BUILD) --output-on-failure

integration: deps build contract-lint
	$(call integration_run,$(BUILD))

# The integration suites record every HTTP exchange with an instance in
# <build folder>/contract.jsonl; each is then validated against
# api/openapi.yaml (tests/contract/validate.mjs), so the spec cannot drift.
# $(call integration_run,BUILD_FOLDER[,MORE_ENVIRONMENT])
integration_run = : >$(1)/contract.jsonl && \
	CRONFENCE_BIN_DIR=$(abspath $(1)) CRONFENCE_CONTRACT_LOG=$(abspath $(1))/contract.jsonl $(2) \
		$(PYTHON) -m pytest -q tests/integration && \
	node tests/contract/validate.mjs --routes server/api.c $(1)/contract.jsonl

# Redocly CLI and ajv (tests/contract), and the Standard Webhooks reference library
# (tests/standard-webhooks), pinned in their package-lock.json.
contract-deps: deps
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq npm; }
	npm --prefix tests/contract ci --no-audit --no-fund --loglevel=error
	npm --prefix tests/standard-webhooks ci --no-audit --no-fund --loglevel=error

# Then a client generated by openapi-typescript (pinned there too) must type-check the
# README's request bodies (tests/contract/readme_client.mjs).
contract-lint: contract-deps
	cd tests/contract && REDOCLY_SUPPRESS_UPDATE_NOTICE=true node_modules/.bin/redocly lint \
		--config redocly.yaml ../../api/openapi.yaml
	node tests/contract/readme_client.mjs

# libFuzzer targets, each run for FUZZ_SECONDS from its seed corpus (copied, so the
# corpus in the repository stays as committed).
fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCF_FUZZ=ON -DCF_TESTS=OFF >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_cron fuzz_job fuzz_yaml fuzz_http
	@for target in cron job yaml http; do \
		work=$$(mktemp -d); cp tests/fuzz/corpus/$$target/* $$work/; \
		echo "fuzzing $$target for $(FUZZ_SECONDS) s"; \
		$(FUZZ_BUILD)/fuzz_$$target -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-print_final_stats=1 $$work >$(FUZZ_BUILD)/fuzz_$$target.log 2>&1 \
			|| { tail -50 $(FUZZ_BUILD)/fuzz_$$target.log; rm -rf $$work; exit 1; }; \
		grep -E "stat::number_of_executed_units|Done" $(FUZZ_BUILD)/fuzz_$$target.log | tail -2; \
		rm -rf $$work; \
	done

# node-redlock and BullMQ, pinned in tests/bench/peers/package-lock.json, for peers_bench.py.
bench-deps: deps
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq npm; }
	npm --prefix tests/bench/peers ci --no-audit --no-fund --loglevel=error

bench: deps build bench-deps
	$(PYTHON) tests/bench/standalone_lag.py --bin-dir $(abspath $(BUILD))
	$(PYTHON) tests/bench/cluster_bench.py --bin-dir $(abspath $(BUILD))
	$(PYTHON) tests/bench/events_bench.py --bin-dir $(abspath $(BUILD))
	$(PYTHON) tests/bench/startup_bench.py --bin-dir $(abspath $(BUILD))
	$(PYTHON) tests/bench/peers_bench.py --bin-dir $(abspath $(BUILD))

format:
	clang-format -i server/*.c server/*.h tests/unit/*.c tests/fuzz/*.c tests/tools/*.c

check-format:
	clang-format --dry-run --Werror server/*.c server/*.h tests/unit/*.c tests/fuzz/*.c tests/tools/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
