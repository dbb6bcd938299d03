# Images of kaas, built from this repository:
#   docker build --target operator      -t <registry>/kaas-operator:<tag> .
#   docker build --target device-plugin -t <registry>/kaas-device-plugin:<tag> .
# The chart expects both under the same registry prefix (values: image.repository).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kaas-operator -p kaas-device-plugin \
 && mkdir -p /out \
 && cp target/release/kaas-operator target/release/kaas-device-plugin /out/

# The operator needs nothing from the host: distroless, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/kaas-operator /usr/local/bin/kaas-operator
USER nonroot
ENTRYPOINT ["/usr/local/bin/kaas-operator"]
CMD ["run"]

# The device plugin loads libcuda at run time when the NVIDIA container runtime mounts
# it (cudarc dynamic loading); without it the node serves WebAssembly only. It runs as
# root to create its socket in the kubelet's device-plugin directory (see the chart).
FROM gcr.io/distroless/cc-debian12 AS device-plugin
COPY --from=build /out/kaas-device-plugin /usr/local/bin/kaas-device-plugin
ENTRYPOINT ["/usr/local/bin/kaas-device-plugin"]
