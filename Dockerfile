# syntax=docker/dockerfile:1
#
# pgtenant image: `docker build -t pgtenant .`
# Run: docker run -p 6432:6432 -p 9187:9187 \
#   -v $PWD/pgtenant.toml:/etc/pgtenant/pgtenant.toml:ro \
#   -e PGTENANT_APP_DB__URL=postgres://pgtenant:PW@db:5432/app \
#   -e ENCRYPTION_KEY=... pgtenant

FROM rust:1-bookworm AS builder
# pg_query builds libpg_query with bindgen: needs libclang. The release
# binary is built with profile-guided optimization (scripts/build-pgo.sh),
# which serves pgbench through a throwaway PostgreSQL cluster to record the
# profile: PostgreSQL, openssl and ss (iproute2) for that, and rustup's
# llvm-tools for the llvm-profdata that matches rustc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
      postgresql postgresql-contrib openssl iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup component add llvm-tools
WORKDIR /src
# third_party/ holds the patched pg_query (see third_party/pg_query/PATCHES.md).
# No dependencies-only layer: the PGO builds compile every crate with flags
# (the profile) that exist only after the training run.
COPY Cargo.toml Cargo.lock ./
COPY third_party ./third_party
COPY src ./src
COPY scripts ./scripts
COPY bench/lib.sh ./bench/lib.sh
COPY deploy/sql ./deploy/sql
RUN scripts/build-pgo.sh \
 && cp target/pgo/release/pgtenant /pgtenant \
 && strip /pgtenant

FROM debian:bookworm-slim
# ca-certificates: TLS to data sources; curl: the HEALTHCHECK probe.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pgtenant \
 && useradd --system --uid 10001 --gid pgtenant --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pgtenant
COPY --from=builder /pgtenant /usr/local/bin/pgtenant
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
