# syntax=docker/dockerfile:1
# veil-keyservice image: multi-stage cargo build, small Debian runtime, non-root.
#   docker build -f docker/keyservice.Dockerfile -t veil/keyservice:dev .
# The runtime carries curl only for health probes: the keyservice listens on loopback, so
# Kubernetes and compose probe it from inside the container (exec), not over the network.

# The toolchain rust-toolchain.toml pins (rustup installs its components on first use).
FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p veil-keyservice --bin veil-keyservice \
 && install -D -m 0755 target/release/veil-keyservice /out/veil-keyservice

FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 veil && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin veil \
 # The keyring directory (a volume in compose): owned by the keyservice user.
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/veil
COPY --from=build /out/veil-keyservice /usr/local/bin/veil-keyservice
USER 65532:65532
WORKDIR /var/lib/veil
ENV VEIL_KEYSERVICE_LISTEN=127.0.0.1:9911 \
    VEIL_KEYRING=/var/lib/veil/keyring.json \
    VEIL_LOG_FORMAT=json
EXPOSE 9911
ENTRYPOINT ["/usr/local/bin/veil-keyservice"]
CMD ["serve"]
