# syntax=docker/dockerfile:1
# veil-demo-upstream (tests/src/bin/demo_upstream.rs), the recording vendor of the demo.
#   docker build -f docker/demo-upstream.Dockerfile -t veil/demo-upstream:dev .

FROM rust:1.95.0-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p veil-e2e --bin veil-demo-upstream \
 && install -D -m 0755 target/release/veil-demo-upstream /out/veil-demo-upstream

FROM debian:trixie-slim
COPY --from=build /out/veil-demo-upstream /usr/local/bin/veil-demo-upstream
USER 65532:65532
EXPOSE 18080
ENTRYPOINT ["/usr/local/bin/veil-demo-upstream"]
CMD ["--listen", "0.0.0.0:18080"]
