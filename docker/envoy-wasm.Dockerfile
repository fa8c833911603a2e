# syntax=docker/dockerfile:1
# The official Envoy image with Veil's proxy-wasm filter at /etc/veil/veil_filter.wasm: what
# the compose stack runs with VEIL_FILTER=wasm (the default; compose/envoy-wasm.yaml loads
# that path). docker/envoy-native.Dockerfile is the same with the native module. Istio takes
# the filter as its own OCI image instead (docker/filter.Dockerfile).
#   docker build -f docker/envoy-wasm.Dockerfile -t registry.example.com/veil/envoy-wasm:0.1.0 .

FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    rustup target add wasm32-wasip1 \
 && cargo build --release --locked -p veil-filter --target wasm32-wasip1 \
 && install -D -m 0644 target/wasm32-wasip1/release/veil_filter.wasm /out/veil_filter.wasm

FROM envoyproxy/envoy:v1.40.0
COPY --from=build /out/veil_filter.wasm /etc/veil/veil_filter.wasm
USER envoy
