# rag-sync — developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test test-tools fmt-check clippy lib-without-operator unit-tests build cluster-up cluster-down k8s-bins crds bench bench-latency bench-scale demo demo-down image install-plugin chaos

# The test namespaces are removed afterwards, pass or fail: the shared control plane (and a
# demo running on it) is left as it was found.
test: fmt-check clippy lib-without-operator build k8s-bins test-tools
	$(CARGO) test --all-targets -- --test-threads=2; status=$$?; bash hack/control-plane.sh clean-tests; exit $$status

build:
	$(CARGO) build --bins

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The library alone, as an embedder without Kubernetes builds it (no kube, k8s-openapi,
# schemars or serde_yaml).
lib-without-operator:
	$(CARGO) clippy --lib --no-default-features -- -D warnings
	! $(CARGO) tree --no-default-features -e normal | grep -E '^[^a-z]*(kube|k8s-openapi|schemars|serde_yaml) '

# Builds (first time) or reuses the cached third-party test tools (kube-score, toxiproxy,
# schemathesis).
test-tools:
	bash hack/test-tools.sh kube-score >/dev/null
	bash hack/test-tools.sh toxiproxy >/dev/null
	bash hack/test-tools.sh schemathesis >/dev/null

# Chaos soak (tests/chaos.rs): 5 real nodes, every peer link through toxiproxy, a seeded
# random fault schedule under concurrent writers, then the history checker; prints the
# figures. CI runs the default (60 s, seed 1) in `make test`. Longer or other runs:
#   make chaos SECONDS=600 SEED=7
# SECONDS is taken only from the command line: bash's own SECONDS counter (the seconds since
# the shell started) would come in from an environment that exports it.
ifneq ($(origin SECONDS),command line)
SECONDS := 60
endif
SEED ?= 1
chaos:
	bash hack/test-tools.sh toxiproxy >/dev/null
	RAGSYNC_CHAOS_SECONDS=$(SECONDS) RAGSYNC_CHAOS_SEED=$(SEED) $(CARGO) test --release --test chaos -- --nocapture

# Builds (first time) or reuses the cached kube-apiserver, etcd, kubectl and helm.
k8s-bins:
	bash hack/k8s-bins.sh >/dev/null

cluster-up: k8s-bins
	bash hack/control-plane.sh up

cluster-down:
	bash hack/control-plane.sh down

# Regenerates the committed CRD YAML from the Rust types.
crds:
	$(CARGO) run --quiet --bin crdgen > crds/ragsync.io.yaml
	cp crds/ragsync.io.yaml charts/rag-sync-operator/crds/ragsync.io.yaml

# The one-command demo (see README); `make demo-down` stops it.
# Scale: one Sparse policy over 200 real rag-node processes as 200 pods, 1,000 SyncPeers over
# 50 policies, against the real control plane and operator; prints the figures (README).
# Smaller: make bench-scale MEMBERS=100 EXTRA_POLICIES=0
MEMBERS ?= 200
EXTRA_POLICIES ?= 49
bench-scale: k8s-bins
	RAGSYNC_SCALE_MEMBERS=$(MEMBERS) RAGSYNC_SCALE_EXTRA_POLICIES=$(EXTRA_POLICIES) \
	  $(CARGO) test --release --test scale -- --nocapture

demo: k8s-bins
	bash hack/demo.sh

demo-down:
	bash hack/demo.sh down

image:
	docker build -t rag-sync:0.1.0 .

# The kubectl plugin (`kubectl ragsync status|sync|conflicts`, see README): builds the release
# binary and installs it, stripped (15 MB instead of 150 with the release profile's debug
# info), as $(PREFIX)/bin/kubectl-ragsync. PREFIX defaults to ~/.local; with $(PREFIX)/bin on
# PATH, `kubectl plugin list` finds it. E.g. make install-plugin PREFIX=/usr/local
PREFIX ?= $(HOME)/.local
install-plugin:
	$(CARGO) build --release --bin kubectl-ragsync
	install -d "$(PREFIX)/bin"
	install -s -m 0755 target/release/kubectl-ragsync "$(PREFIX)/bin/kubectl-ragsync"
	@echo "installed $(PREFIX)/bin/kubectl-ragsync (PREFIX=$(PREFIX)); with $(PREFIX)/bin on PATH, 'kubectl plugin list' lists it and 'kubectl ragsync --help' runs it"

# Sync benchmark on two (and five) real release rag-node processes; see benches/README.md.
# Extra options: make bench ARGS="--docs 1000000 --runs 1"
bench:
	$(CARGO) build --release --bin rag-node --bin rag-bench
	target/release/rag-bench --mesh5 $(ARGS)

# Live delivery: write-to-all latency, idle CPU and a sustained stream; see benches/README.md.
# Extra options: make bench-latency ARGS="--runs 1 --latency-only-5"
bench-latency:
	$(CARGO) build --release --bin rag-node --bin rag-bench
	target/release/rag-bench --latency $(ARGS)
