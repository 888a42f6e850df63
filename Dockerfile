# syntax=docker/dockerfile:1
# Build:  docker build -t vespid .
# Run:    docker compose up   (see compose.yaml), or
#         docker run --rm -p 3001:3001 -e DATABASE_URL=... -e DATABASE_MIGRATE_URL=... -e REDIS_URL=... vespid

############################ builder ############################
FROM rust:1-bookworm AS builder
WORKDIR /src

# Cargo's registry and target dir live in BuildKit cache mounts, so rebuilding after a source change reuses
# compiled dependencies without any dummy-source trick. The binary is copied out of the cached target dir
# inside the same RUN, because cache mounts are not part of the image.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vespid \
    && install -m 0755 target/release/vespid /usr/local/bin/vespid

############################ runtime ############################
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 vespid \
    && useradd --system --uid 10001 --gid vespid --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin vespid

WORKDIR /app
COPY --from=builder /usr/local/bin/vespid /usr/local/bin/vespid
# The defaults in config/ are compiled into the binary; the folder is shipped for reference and for
# mounting or copying an override file next to it.
COPY config/ /app/config/

# Listen on all interfaces inside the container (the API on 3001, the agent gateway on 3002).
ENV API_HOST=0.0.0.0 \
    GATEWAY_HOST=0.0.0.0

USER vespid:vespid
EXPOSE 3001 3002

# No HEALTHCHECK here: the image also runs single roles (e.g. --role=worker) that serve no HTTP.
# compose.yaml adds one for --role=all, probing GET /healthz with bash's /dev/tcp (no curl in this image).

ENTRYPOINT ["vespid"]
CMD ["serve", "--role=all"]
