# syntax=docker/dockerfile:1
# The official Envoy image with Veil's native filter (libveil.so, the dynamic-module shell)
# installed where Envoy looks for dynamic modules. Run it with envoy/veil-seal-native.yaml or
# envoy/veil-relay-native.yaml (they load the module by name: `dynamic_module_config.name:
# veil`). Upgrading is a new image (or a new file renamed over the old one) and a restart:
# never overwrite a loaded .so in place (docs/deploy-envoy.md). The compose stack runs it
# with VEIL_FILTER=native (compose/envoy-native.yaml loads /usr/local/lib/veil/libveil.so).
#   docker build -f docker/envoy-native.Dockerfile -t registry.example.com/veil/envoy-native:0.1.0 .

# Bookworm's glibc (2.36) is older than the Envoy image's (Ubuntu 24.04, 2.39), so the
# module's glibc symbol versions resolve there. The Envoy tag must match the ABI the module
# was written for (v0.2.0 = Envoy 1.40): a different Envoy may load it and corrupt memory.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile native -p veil-native \
 && install -D -m 0755 target/native/libveil.so /out/libveil.so

FROM envoyproxy/envoy:v1.40.0
# One directory (not a list): Envoy loads $ENVOY_DYNAMIC_MODULES_SEARCH_PATH/libveil.so.
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/veil
COPY --from=build /out/libveil.so /usr/local/lib/veil/libveil.so
USER envoy
