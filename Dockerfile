# barkeep built from this repository, for docker-compose.yml.
#   docker build -t barkeep .
#   docker run ... barkeep                     (runs the daemon with /etc/barman.conf)
#   docker compose exec barkeep barkeep list-backup pg

# Build: the TypeScript sources compiled to dist/. --ignore-scripts skips the
# install scripts of the dev-only packages (the test suite's PostgreSQL
# binaries, the Node.js download) and ssh2's optional native build: its
# JavaScript fallback is what runs without a compiler anyway.
# The build stage is linux/amd64 whatever the target: the test suite's
# PostgreSQL packages in the lockfile are x64-only, so `npm ci` refuses other
# CPUs (EBADPLATFORM). Its output (dist/ and the runtime dependencies after
# the prune) is plain JavaScript, so the final stage runs on any platform;
# on an arm64 host the build stage runs under emulation.
ARG BUILD_PLATFORM=linux/amd64
FROM --platform=${BUILD_PLATFORM} node:22-bookworm-slim AS build
WORKDIR /opt/barkeep
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts \
 && chmod 755 dist/cli/bin.js dist/cli/wal-archive-bin.js dist/cli/wal-restore-bin.js

FROM node:22-bookworm-slim
# The standard tools behind compression = bzip2 | lz4 | xz (gzip and zstd
# run in-process).
RUN apt-get update \
 && apt-get install -y --no-install-recommends bzip2 lz4 xz-utils zstd \
 && rm -rf /var/lib/apt/lists/*
# The barman user and its directories, as on a Barman host. Named volumes
# mounted on them start with this ownership.
RUN groupadd --system barman \
 && useradd --system --gid barman --home-dir /var/lib/barman --shell /bin/bash barman \
 && install -d -o barman -g barman -m 0700 /var/lib/barman \
 && install -d -o barman -g barman -m 0750 /var/log/barman \
 && install -d -m 0755 /etc/barman.d
COPY --from=build /opt/barkeep /opt/barkeep
RUN ln -s /opt/barkeep/dist/cli/bin.js /usr/local/bin/barkeep \
 && ln -s /opt/barkeep/dist/cli/wal-archive-bin.js /usr/local/bin/barkeep-wal-archive \
 && ln -s /opt/barkeep/dist/cli/wal-restore-bin.js /usr/local/bin/barkeep-wal-restore

USER barman
WORKDIR /var/lib/barman
# The daemon's /metrics and /health (http_listen; 0.0.0.0:9187 in the
# container, published on the host's loopback by docker-compose.yml).
EXPOSE 9187
# SIGTERM: clean stop within 10 s. SIGHUP: reload the configuration.
STOPSIGNAL SIGTERM
CMD ["barkeep", "daemon", "-c", "/etc/barman.conf"]
