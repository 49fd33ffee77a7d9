# syntax=docker/dockerfile:1
# One image with both binaries: rag-node (the reference RAG node) and rag-sync-operator.
#
#   docker build -t rag-sync:0.1.0 .
#
# The Helm charts run /usr/local/bin/rag-node and /usr/local/bin/rag-sync-operator from it
# (values `image.repository: rag-sync`, tag = the chart's appVersion).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crate registry and the build directory between builds, so an
# edit in src/ does not rebuild every dependency. The binaries are copied out of the cached
# target/ (which is not part of the image layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rag-node --bin rag-sync-operator \
 && mkdir -p /out/bin /out/data \
 && cp target/release/rag-node target/release/rag-sync-operator /out/bin/

# Distroless "cc": glibc, libgcc and CA certificates (TLS is rustls, so no OpenSSL), a
# writable /tmp, no shell, and the nonroot user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/bin/ /usr/local/bin/
# rag-node's default data directory below; a volume mounted there (the chart's PVC) replaces it.
COPY --from=builder --chown=65532:65532 /out/data /data
USER 65532:65532
# 8090: rag-node's HTTP server; 8080: the operator's metrics and probes.
EXPOSE 8080 8090
ENTRYPOINT ["/usr/local/bin/rag-node"]
CMD ["--listen", "0.0.0.0:8090", "--data-dir", "/data"]
