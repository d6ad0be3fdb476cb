# syntax=docker/dockerfile:1
#
# rangecache in a container: a build stage with the Rust toolchain, and a small runtime stage
# (distroless: glibc, CA certificates, no shell) running as a non-root user, with the disk tier
# on a volume.
#
#   docker build -t rangecache .
#   docker run -p 8080:8080 -v rangecache-data:/var/lib/rangecache rangecache
#
# Configuration: /etc/rangecache/rangecache.toml (contrib/rangecache.toml; mount another over
# it), and RANGECACHE_* variables for every top-level key (README.md, "Environment").

ARG RUST_VERSION=1.91

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are cache mounts, so a rebuild after a source change
# compiles only what changed. The binary is copied out of the cache before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rangecache --bin rangecache \
    && install -D -m 0755 target/release/rangecache /out/usr/local/bin/rangecache \
    && install -d -m 0700 /out/var/lib/rangecache

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/rangecache /usr/local/bin/rangecache
COPY contrib/rangecache.toml /etc/rangecache/rangecache.toml
# Owned by the image's user, so a new named volume starts out writable by it.
COPY --from=build --chown=65532:65532 /out/var/lib/rangecache /var/lib/rangecache
USER 65532:65532
VOLUME ["/var/lib/rangecache"]
ENV RANGECACHE_LISTEN=0.0.0.0:8080 \
    RANGECACHE_LOG_FORMAT=json
EXPOSE 8080
# Probes: GET /healthz (liveness) and GET /readyz (readiness); the image has no shell or curl
# for a HEALTHCHECK, which orchestrators replace with their own probes anyway.
ENTRYPOINT ["/usr/local/bin/rangecache"]
CMD ["serve", "--config", "/etc/rangecache/rangecache.toml"]
