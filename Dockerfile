# The Sluice image: `sluice` on a slim Debian with python3 for functions.
#
#   docker build -t sluice .                              # release build
#   docker build --build-arg WITH_PYARROW=true -t sluice .  # + pyarrow for Arrow functions
#
# Build arguments:
#   RUST_IMAGE     the builder (default the upstream rust image of the version this
#                  repository's toolchain uses)
#   RUNTIME_IMAGE  the runtime base (default debian:bookworm-slim)
#   CARGO_PROFILE  release (default) or any profile of Cargo.toml, e.g. dev for a quicker
#                  build of a slower binary
#   WITH_PYARROW   true: pip-install pyarrow (PYARROW_VERSION) for functions with
#                  `encoding = "arrow"`
#
# The builder keeps cargo's registry and target folder in BuildKit cache mounts, so a
# rebuild after a source change compiles only what changed (BuildKit is the default of
# `docker build` since Engine 23; on older engines set DOCKER_BUILDKIT=1).
#
# The image runs as root: the function sandbox gives every job a user of its own and
# its own namespaces, which needs root (and, in a container, CAP_SYS_ADMIN). See the
# README, "Run the stack with docker-compose".

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# make and perl build the bundled librdkafka; zlib for its compression.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      make perl pkg-config zlib1g-dev g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads, so edits elsewhere (jobs, test helpers, docs) reuse the
# cached layer.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY platform platform
COPY connectors connectors
COPY bench bench
# The manifest names the end-to-end test files (`[[test]]` entries), and cargo checks
# they exist even when it builds only the binary: their top-level files, nothing else.
COPY tests/*.rs tests/
COPY python/sluice_fn python/sluice_fn
ARG CARGO_PROFILE=release
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile "$CARGO_PROFILE" --bin sluice \
 && out=$(if [ "$CARGO_PROFILE" = dev ]; then echo debug; else echo "$CARGO_PROFILE"; fi) \
 && cp "target/$out/sluice" /usr/local/bin/sluice

FROM ${RUNTIME_IMAGE}
ARG WITH_PYARROW=false
ARG PYARROW_VERSION=26.0.1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 tini ca-certificates \
 && if [ "$WITH_PYARROW" = true ]; then \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip \
      && pip3 install --no-cache-dir --break-system-packages "pyarrow==$PYARROW_VERSION" \
      && apt-get purge -y --auto-remove python3-pip; \
    fi \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
# The Python SDK, importable by every function user (`from sluice_fn import records`).
COPY python/sluice_fn /usr/lib/python3/dist-packages/sluice_fn
RUN mkdir -p /data /jobs /var/lib/sluice \
 && sluice --version
ENV SLUICE_DATA_DIR=/var/lib/sluice
WORKDIR /data
EXPOSE 8470
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=6 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8470/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "sluice"]
CMD ["serve", "--listen", "0.0.0.0:8470", "--data", "/data", "--jobs", "/jobs"]
