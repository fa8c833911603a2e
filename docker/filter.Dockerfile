# syntax=docker/dockerfile:1
# The Veil filter as an OCI image for Istio's WasmPlugin (url: oci://...): Istio takes the
# image's last layer, which holds exactly /plugin.wasm.
#   docker build -f docker/filter.Dockerfile -t registry.example.com/veil/filter:0.1.0 .

FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    rustup target add wasm32-wasip1 \
 && cargo build --release --locked -p veil-filter --target wasm32-wasip1 \
 && install -D -m 0644 target/wasm32-wasip1/release/veil_filter.wasm /out/plugin.wasm

FROM scratch
COPY --from=build /out/plugin.wasm /plugin.wasm
