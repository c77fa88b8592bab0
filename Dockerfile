# anamo in a container. The default command is the controller; every other subcommand works
# too (`docker run --rm anamo task list --step align`).
#
#   docker build -t anamo .
#   docker run -d --name anamo-controller \
#       -v "$PWD/manifests:/etc/anamo/manifests:ro" \
#       -e ANAMO_STORE=dynamodb://genomics-tasks -e AWS_REGION=eu-west-1 \
#       -e ANAMO_METRICS_ADDR=0.0.0.0:9464 -p 9464:9464 \
#       anamo
#
# AWS credentials come from the default chain: on EC2 the instance profile (IMDSv2 needs a hop
# limit of 2 for containers behind the docker bridge), elsewhere -e AWS_PROFILE with a mounted
# ~/.aws, or the usual AWS_* variables. The metrics server listens on 127.0.0.1:9464 unless
# ANAMO_METRICS_ADDR (or the Controller manifest's metricsAddr) says otherwise, which inside a
# container is only reachable from the container itself: set 0.0.0.0:9464 to publish it.
# Run `anamo worker` with `docker run --init`, so that orphaned task processes are reaped.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build
# Dependencies first, in a layer that only changes with Cargo.toml/Cargo.lock: build them
# against placeholder sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
# Then anamo itself (`manifests/` holds the user-data template compiled into the binary).
COPY src src
COPY manifests manifests
# COPY keeps the files' old modification times: make sure cargo sees the real sources as new.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/anamo /usr/local/bin/anamo \
    && anamo --version

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 anamo \
    && useradd --system --uid 10001 --gid anamo --home-dir /var/lib/anamo --create-home \
        --shell /usr/sbin/nologin anamo \
    && install -d -m 0755 /etc/anamo/manifests
COPY --from=builder /usr/local/bin/anamo /usr/local/bin/anamo
USER anamo:anamo
# A relative sqlite:// store and local workers' logs land here.
WORKDIR /var/lib/anamo
EXPOSE 9464
ENTRYPOINT ["anamo"]
CMD ["controller", "--manifests", "/etc/anamo/manifests"]
