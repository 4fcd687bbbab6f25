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
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/portal portal \
 && install -d -o portal -g portal -m 0700 /var/lib/portal/keys /etc/portal
COPY --from=build /usr/local/bin/portal /usr/local/bin/portal
USER portal
WORKDIR /var/lib/portal
# JSON log lines on standard error; keys where a volume can keep them.
ENV LOG_FORMAT=json \
    JWT_KEY_DIR=/var/lib/portal/keys
ENTRYPOINT ["portal"]
CMD ["--help"]
