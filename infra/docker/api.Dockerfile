# shortener-api: build with the Rust toolchain, run on a slim Debian.
# Built from the repository root: docker build -f infra/docker/api.Dockerfile .
FROM rust:1.95-bookworm AS build
# librdkafka is compiled from source by rdkafka's cmake-build feature.
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shortener-api \
    && cp target/release/shortener-api /usr/local/bin/

FROM debian:bookworm-slim
# curl: the container health check asks /readyz.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/shortener --create-home shortener
COPY --from=build /usr/local/bin/shortener-api /usr/local/bin/shortener-api
USER shortener
WORKDIR /var/lib/shortener
ENV SHORTENER__HTTP__LISTEN=0.0.0.0:8080 \
    SHORTENER__LOG__FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["shortener-api"]
CMD ["serve"]
