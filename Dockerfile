# Multi-stage build: a static-ish binary (rustls, bundled SQLite) on a slim
# runtime image. Build: docker build -t optiwatch .
# Run (watch a mounted media folder; config and store in /etc/optiwatch):
#   docker run -d --name optiwatch \
#     -v /var/www/html/wp-content/uploads:/media:ro \
#     -v /srv/optiwatch:/etc/optiwatch \
#     -e OPTIMOLE_API_KEY=opt_... optiwatch
# with dir = "/media" in the rules and state = "/etc/optiwatch/optiwatch.db".
# Bind mounts from the host deliver inotify events; for network or FUSE
# mounts set [watch] poll = true.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin optiwatch \
 && strip target/release/optiwatch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent optiwatch
COPY --from=build /src/target/release/optiwatch /usr/local/bin/optiwatch
USER optiwatch
ENV OPTIWATCH_CONFIG=/etc/optiwatch/watcher.toml
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/optiwatch"]
CMD ["watch"]
