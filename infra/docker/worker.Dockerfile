# shortener-worker: build with the Rust toolchain, run on a slim Debian.
# Built from the repository root: docker build -f infra/docker/worker.Dockerfile .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shortener-worker \
    && cp target/release/shortener-worker /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 shortener
COPY --from=build /usr/local/bin/shortener-worker /usr/local/bin/shortener-worker
USER shortener
ENTRYPOINT ["shortener-worker"]
