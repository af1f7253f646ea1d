# tokend: the two commands a newcomer needs are `make run` and `make test`.

VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run run-redis test bench lint package fmt tools redis-server python-tools

## Start tokend on the embedded store with a demo account (only Rust needed),
## with Prometheus metrics on http://127.0.0.1:9090/metrics.
run:
	cargo run --bin tokend -- serve --dev --metrics-listen 127.0.0.1:9090

## tokend on a local redis-server (started on 127.0.0.1:6390, data in
## target/run-redis), with the user alice and the client resource-svc.
run-redis: redis-server
	./scripts/run-redis

## Run every test; installs redis-server and the Python tools if missing.
## (The first line builds what `make run` runs, so that `make run` afterwards
## starts at once: the test build turns on a few more dependency features.)
test: tools
	cargo build --bin tokend
	cargo test --workspace

## Throughput, latency and memory (release builds; a few minutes): prints a
## table and writes target/bench/summary.json. See BENCHMARKS.md.
bench: redis-server
	cargo build --release -p tokend -p tokend-bench --features tokend/bench-baseline-no-account-check
	cp target/release/tokend target/release/tokend-baseline
	cargo build --release -p tokend -p tokend-bench
	cargo build --release --workspace --examples
	cargo bench -p tokend-interceptor --bench verify
	./target/release/tokend-bench

## Format check and clippy, warnings as errors.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p tokend-interceptor --no-default-features -- -D warnings
	cargo clippy -p tokend-interceptor --no-default-features --features server -- -D warnings
	cargo clippy -p tokend-interceptor --no-default-features --features client -- -D warnings
	$(MAKE) package

## Both published crates package and build from their packaged sources alone.
package:
	cargo package -p tokend-interceptor -p tokend --allow-dirty --quiet

fmt:
	cargo fmt --all

tools: redis-server python-tools

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server (apt-get)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	}

python-tools: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
	touch $@
