# tokend: the two commands a newcomer needs are `make run` and `make test`.

VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run run-redis resource-server gate envoy test bench chaos lint package proto-gen proto-check proto-lint deploy-check fmt tools redis-server fault-tools promtool python-tools

## Start tokend on the embedded store with a demo account (only Rust needed),
## with Prometheus metrics on http://127.0.0.1:9090/metrics.
## Move them with `make run METRICS=127.0.0.1:9191`.
METRICS ?= 127.0.0.1:9090
run:
	cargo run --bin tokend -- serve --dev --metrics-listen $(METRICS) \
		--exchange-policy deploy/exchange/policy.example.toml

## tokend on a local redis-server (started on 127.0.0.1:6390, data in
## target/run-redis), with the user alice and the client resource-svc.
run-redis: redis-server
	./scripts/run-redis

## The example resource server (interceptor/examples/resource_server), built
## with the workspace's features so that it reuses the build of `make run`
## and `make test` instead of resolving features of its own:
##   make resource-server ARGS="--tokend http://127.0.0.1:50051"
resource-server:
	cargo build --quiet --workspace --examples
	./target/debug/examples/resource_server $(ARGS)

## tokend-gate, the Envoy external-authorization server (gate/), and Envoy
## with deploy/envoy/envoy.yaml in front of it (Envoy from the Python tools):
##   make gate ARGS="--tokend http://127.0.0.1:50051 --policy deploy/envoy/gate-policy.toml"
##   make envoy
gate:
	cargo build --quiet -p tokend-gate
	./target/debug/tokend-gate $(ARGS)

envoy: python-tools
	envoy -c deploy/envoy/envoy.yaml --log-level warn $(ARGS)

## Run every test; installs redis-server and the Python tools if missing.
## (The first line builds what `make run` runs, so that `make run` afterwards
## starts at once: the test build turns on a few more dependency features.)
test: tools
	cargo build --bin tokend
	cargo test --workspace
	cargo test --lib --features otlp telemetry::otlp

## Randomized fault injection (docs/DESIGN.md, "Failure testing"): real
## faults drawn from SEED for DURATION on a TOPOLOGY (cluster or sentinel)
## under retrying clients; the checker reads the history (written to
## target/chaos/history-TOPOLOGY-SEED.jsonl) and fails on any violation.
SEED ?= 1
DURATION ?= 60s
TOPOLOGY ?= cluster
chaos: redis-server fault-tools
	cargo build --bin tokend
	cargo build -p testkit --bin tokend-chaos
	target/debug/tokend-chaos --seed $(SEED) --duration $(DURATION) --topology $(TOPOLOGY) \
		--history target/chaos/history-$(TOPOLOGY)-$(SEED).jsonl

## Throughput, latency and memory (release builds; a few minutes): prints a
## table and writes target/bench/summary.json. See BENCHMARKS.md.
bench: redis-server python-tools
	cargo build --release -p tokend -p tokend-bench --features tokend/bench-baseline-no-account-check
	cp target/release/tokend target/release/tokend-baseline
	cargo build --release -p tokend -p tokend-bench -p tokend-gate
	cargo build --release --workspace --examples
	cargo bench -p tokend-interceptor --bench verify --features bench-internals
	./target/release/tokend-bench

## Format check and clippy, warnings as errors; no import cycle between the
## top-level modules of src/; the checked-in generated code is current; both
## crates package; the API lints; deploy/ validates.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p tokend --features otlp --all-targets -- -D warnings
	cargo clippy -p tokend-interceptor --features bench-internals --benches -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc -p tokend-interceptor --no-deps --quiet
	cargo clippy -p tokend-interceptor --no-default-features -- -D warnings
	cargo clippy -p tokend-interceptor --no-default-features --features server -- -D warnings
	cargo clippy -p tokend-interceptor --no-default-features --features client -- -D warnings
	scripts/check-module-cycles src
	$(MAKE) proto-check
	$(MAKE) package
	$(MAKE) proto-lint
	$(MAKE) deploy-check

## Regenerate the code that tokend-interceptor checks in (the tokend.v1
## messages and client, the example's demo.v1) from the .proto files.
GENERATED := interceptor/src/generated interceptor/examples/resource_server/generated
proto-gen:
	cargo run --quiet -p tokend-codegen

## The checked-in generated code is what proto/ generates today: regenerate
## and fail on any difference (or a generated file git does not know).
proto-check: proto-gen
	@git diff --exit-code --stat -- $(GENERATED) || { \
		echo "generated code differs from the .proto files: commit what make proto-gen wrote"; exit 1; }
	@new=$$(git ls-files --others --exclude-standard -- $(GENERATED)); \
	if [ -n "$$new" ]; then echo "generated files not in git: $$new"; exit 1; fi

BUF := .tools/node_modules/.bin/buf
PROTO := proto
# The proto of the last commit, when it has one where ours is.
PREVIOUS := $(shell git rev-parse -q --verify HEAD~1 >/dev/null 2>&1 && git cat-file -e HEAD~1:$(PROTO)/tokend/v1/token_service.proto 2>/dev/null && echo HEAD~1)

## The API: buf lint (STANDARD and COMMENTS: every service, method, message
## and field documented), and buf breaking against the last commit's proto.
proto-lint: $(BUF)
	$(BUF) lint $(PROTO)
	@if [ -n "$(PREVIOUS)" ]; then \
		echo "buf breaking against HEAD~1"; \
		$(BUF) breaking $(PROTO) --against '.git#ref=HEAD~1,subdir=$(PROTO)'; \
	else echo "no earlier proto to compare with"; fi

## deploy/: the alert rules parse and fire as their unit tests expect, the
## systemd unit verifies without a word, the Kubernetes manifests validate,
## Envoy accepts the example bootstrap and the gate its example policy.
deploy-check: promtool python-tools
	promtool check rules deploy/prometheus/tokend-alerts.yml
	cd deploy/prometheus && promtool test rules tokend-alerts.test.yml
	@d=$$(mktemp -d); \
	sed "s#/usr/local/bin/tokend#$$(command -v true)#" deploy/systemd/tokend.service > $$d/tokend.service; \
	out=$$(systemd-analyze verify $$d/tokend.service 2>&1); rm -rf $$d; \
	if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "deploy/systemd/tokend.service: verified"
	kubernetes-validate --strict --quiet deploy/kubernetes/tokend.yaml deploy/kubernetes/tokend-gate.yaml
	envoy --mode validate -c deploy/envoy/envoy.yaml --log-level warn
	cargo run --quiet -p tokend-gate -- policy check deploy/envoy/gate-policy.toml
	@mkdir -p target && python3 -c "import yaml; d = next(yaml.safe_load_all(open('deploy/kubernetes/tokend-gate.yaml'))); print(d['data']['policy.toml'])" > target/kubernetes-gate-policy.toml
	cargo run --quiet -p tokend-gate -- policy check target/kubernetes-gate-policy.toml
	cargo run --quiet --bin tokend -- exchange-policy check deploy/exchange/policy.example.toml

promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing promtool (apt-get: prometheus)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	}

$(BUF):
	npm install --no-audit --no-fund --silent --prefix .tools @bufbuild/buf@1.75.0

## Both published crates package and build from their packaged sources alone.
## Verifying tokend unpacks the freshly packaged tokend-interceptor into
## cargo's registry cache, and cargo takes a registry crate of the same name
## and version as unchanged: it would reuse an unpacked copy, or a build of
## it, from an earlier run. So verification builds in a target directory of
## its own, from which the two crates' own builds are removed each time (the
## dependencies' stay cached), and the unpacked copy goes too.
PACKAGE_TARGET := target/package-check
package:
	rm -rf $${CARGO_HOME:-$$HOME/.cargo}/registry/src/*/tokend-interceptor-0.1.0
	rm -rf $(PACKAGE_TARGET)/debug/.fingerprint/tokend-* $(PACKAGE_TARGET)/debug/deps/*tokend* \
		$(PACKAGE_TARGET)/debug/build/tokend-* $(PACKAGE_TARGET)/package
	CARGO_TARGET_DIR=$(PACKAGE_TARGET) cargo package -p tokend-interceptor -p tokend --allow-dirty --quiet

fmt:
	cargo fmt --all

tools: redis-server fault-tools python-tools

## The chaos run's partitions and clock skew: Debian's iptables and faketime
## (without them it runs, and says so, without those faults).
fault-tools:
	@{ command -v iptables >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; } || { \
		echo "installing iptables and faketime (apt-get)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables faketime; \
	}

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
