# syntax=docker/dockerfile:1
#
# pgtenant image: `docker build -t pgtenant .`
# Run: docker run -p 6432:6432 -p 9187:9187 \
#   -v $PWD/pgtenant.toml:/etc/pgtenant/pgtenant.toml:ro \
#   -e PGTENANT_APP_DB__URL=postgres://pgtenant:PW@db:5432/app \
#   -e ENCRYPTION_KEY=... pgtenant

FROM rust:1-bookworm AS builder
# pg_query builds libpg_query with bindgen: needs libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them. third_party/ holds
# the patched pg_query (see third_party/pg_query/PATCHES.md).
COPY Cargo.toml Cargo.lock ./
COPY third_party ./third_party
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin pgtenant \
 && rm -rf src target/release/.fingerprint/pgtenant-* target/release/deps/pgtenant-* target/release/deps/libpgtenant-*
COPY src ./src
RUN cargo build --release --locked --bin pgtenant \
 && strip target/release/pgtenant

FROM debian:bookworm-slim
# ca-certificates: TLS to data sources; curl: the HEALTHCHECK probe.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pgtenant \
 && useradd --system --uid 10001 --gid pgtenant --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pgtenant
COPY --from=builder /src/target/release/pgtenant /usr/local/bin/pgtenant
# A default config; mount your own over it (or set PGTENANT_* variables).
COPY deploy/pgtenant.example.toml /etc/pgtenant/pgtenant.toml
# The config path comes from the environment (not --config) so SIGHUP and
# the console's RELOAD re-read the same file.
ENV PGTENANT_CONFIG=/etc/pgtenant/pgtenant.toml \
    PGTENANT_LISTEN=0.0.0.0:6432 \
    PGTENANT_METRICS__LISTEN=0.0.0.0:9187
USER 10001:10001
EXPOSE 6432 9187
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9187/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/pgtenant"]
CMD ["serve"]
