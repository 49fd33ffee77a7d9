# rag-sync — developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test fmt-check clippy unit-tests build cluster-up cluster-down k8s-bins crds

test: fmt-check clippy build k8s-bins
	$(CARGO) test --all-targets -- --test-threads=2

build:
	$(CARGO) build --bins

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

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
