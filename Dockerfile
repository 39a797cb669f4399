# Multi-stage build: the binary (rustls, bundled SQLite) on a slim runtime
# image, run as the unprivileged user optiwatch (uid 10001).
# Build: docker build -t optiwatch .
#
# Run `watch` on a mounted media folder:
#   docker run -d --name optiwatch \
#     -v /var/www/html/wp-content/uploads:/media:ro \
#     -v /srv/optiwatch/watcher.toml:/etc/optiwatch/watcher.toml:ro \
#     -v /srv/optiwatch/key:/run/secrets/optimole-key:ro \
#     -v optiwatch-state:/state \
#     -v /var/www/html/wp-content/optiwatch:/token \
#     optiwatch
# with, in watcher.toml:
#   state = "/state/optiwatch.db"
#   [api]
#   key_file = "/run/secrets/optimole-key"
#   [[rules]]
#   dir = "/media"
#   url = "https://example.com/wp-content/uploads"
#   [token]
#   file = "/token/optimole-token"
#   [metrics]
#   listen = "127.0.0.1:9464"      # the HEALTHCHECK below asks /healthz here
#                                  # ("0.0.0.0:9464" to scrape /metrics from outside)
# The key comes from a file (a bind mount or a compose/swarm secret at
# /run/secrets/optimole-key), never from `-e`: a variable shows in
# `docker inspect` and in the environment of every process of the container.
# The key file must be readable by uid 10001 and by no one else:
#   install -m 600 -o 10001 /dev/null /srv/optiwatch/key   # then put the key in it
# The token lands in /token (here wp-content/optiwatch/ of the site; with the
# must-use plugin, define('OPTIWATCH_TOKEN_FILE', WP_CONTENT_DIR . '/optiwatch/optimole-token');
# in wp-config.php).
# Ownership: optiwatch runs as uid 10001 and must write the store and the
# token folder. A named volume (optiwatch-state above) starts out owned by
# 10001 (copied from this image); a host folder bind-mounted on /state or
# /token must be chowned first: chown 10001:10001 /srv/optiwatch/state
# /var/www/html/wp-content/optiwatch. The media folder must be readable by
# uid 10001: world-readable uploads are; otherwise add the media folder's
# group, e.g. --group-add 33 (www-data).
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
 && groupadd --system --gid 10001 optiwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin optiwatch \
 && install -d -o 10001 -g 10001 -m 0755 /state /token
COPY --from=build /src/target/release/optiwatch /usr/local/bin/optiwatch
USER optiwatch
ENV OPTIWATCH_CONFIG=/etc/optiwatch/watcher.toml
# The state store (keep it across container restarts: losing it costs a
# baseline) and the folder the token is published to (shared with the site).
VOLUME ["/state", "/token"]
EXPOSE 9464
# /healthz of [metrics] listen: 200 while healthy, 503 once work has been
# owed longer than [metrics] max_owed_age. The slim image has no curl or
# wget, so bash's /dev/tcp asks for it. Needs listen on port 9464 (loopback
# or 0.0.0.0); change the port here if yours differs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 \
  CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/9464 && printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && read -r _ code _ <&3 && [ "$code" = 200 ]'
ENTRYPOINT ["/usr/local/bin/optiwatch"]
CMD ["watch"]
