# syntax=docker/dockerfile:1
# mock-kind admission webhook: one static (musl) binary on distroless/static, run as user 65532.
#
#   docker build -f deploy/docker/webhook.Dockerfile -t mock-kind/webhook:0.1.0 .        (from the repo root)
#   docker buildx build --platform linux/amd64,linux/arm64 -f deploy/docker/webhook.Dockerfile ...
#
# The build stage runs on the build machine's platform and cross-compiles for TARGETARCH, so a
# multi-platform build needs no emulation. The final image holds the binary and nothing else: no
# shell, no package manager (distroless/static brings CA certificates, /etc/passwd and tzdata).

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
# A C compiler for the target (ring, under rustls, compiles C and assembly) and Rust's musl
# target. The musl targets link statically against the musl that ships with Rust, so the
# distribution's gcc serves as C compiler and linker; cross-compiling adds the gcc for the target.
RUN set -eux; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-musl;  gnu=x86-64-linux-gnu; cc=x86_64-linux-gnu-gcc ;; \
      arm64) triple=aarch64-unknown-linux-musl; gnu=aarch64-linux-gnu; cc=aarch64-linux-gnu-gcc ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH': build for linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "gcc-$gnu" "libc6-dev-$TARGETARCH-cross"; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    rustup target add "$triple"; \
    echo "$triple" > /rust-target; \
    echo "$cc" > /target-cc
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    triple="$(cat /rust-target)"; cc="$(cat /target-cc)"; \
    export "CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER=$cc" "CC_$(echo "$triple" | tr '-' '_')=$cc"; \
    cargo build --locked --release --package webhook --bin mock-kind-webhook --target "$triple"; \
    install -D -m 0755 "target/$triple/release/mock-kind-webhook" /out/mock-kind-webhook

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mock-kind-webhook /usr/local/bin/mock-kind-webhook
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/mock-kind-webhook"]
