# The `portal` binary in a small image: every part of the system is `portal <part>`.
# Not built in this repository's CI (its machines run no container engine); kept minimal so that
# what it does can be read at a glance.
#   docker build -t clinic/portal .
#   docker run --rm clinic/portal --help

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p portal \
 && install -m 0755 target/release/portal /usr/local/bin/portal

FROM debian:bookworm-slim
# One user per part, as the Debian package makes them, with fixed uids so that every container
# of this image agrees on who owns each credentials file `portal setup` writes; the
# auth-service's state directory (its signing keys) is its own.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && uid=990 \
 && for part in auth-service relay user-service appointment-service sync-admin gateway web; do \
      groupadd --system --gid "$uid" "portal-$part" \
      && useradd --system --uid "$uid" --gid "$uid" --home-dir /nonexistent --no-create-home \
           --shell /usr/sbin/nologin "portal-$part" \
      && uid=$((uid - 1)); \
    done \
 && install -d -m 0755 /etc/portal /etc/portal/credentials.d \
 && install -d -o portal-auth-service -g portal-auth-service -m 0700 \
      /var/lib/portal/auth-service /var/lib/portal/auth-service/keys
COPY --from=build /usr/local/bin/portal /usr/local/bin/portal
# Each compose service names its part's user; a plain `docker run` runs as nobody in particular.
USER nobody
WORKDIR /
# JSON log lines on standard error; the auth-service's keys where a volume can keep them.
ENV LOG_FORMAT=json \
    JWT_KEY_DIR=/var/lib/portal/auth-service/keys
ENTRYPOINT ["portal"]
CMD ["--help"]
