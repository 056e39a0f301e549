# agent-manager: the supervisor container (README "Deploy").
#
#   docker build -t agent-manager .
#   docker run -d --name agent-manager -p 127.0.0.1:9464:9464 \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:ro -v /proc:/host/proc:ro -e PROC_ROOT=/host/proc \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -e RABBITMQ_URL=amqp://user:pass@rabbitmq:5672/%2f -e REDIS_URL=redis://redis:6379/0 \
#     agent-manager
#
# Configuration is the environment (every variable of README "Configuration"), or a TOML
# file mounted and named with AGENT_MANAGER_CONFIG. The host's cgroup filesystem, mounted
# read-only, lets the manager read the agents' resource samples from their cgroup files
# (CGROUP_ROOT) instead of asking dockerd's stats API for each; the host's /proc
# (PROC_ROOT) gives their network counters. Without them it falls back to the stats API. The process runs as uid 10001 and
# reaches the Docker socket through the socket's group (--group-add, compose group_add).
# `docker exec agent-manager agent-manager agents list` works inside (README "Operate").
#
# Build arguments (the defaults are the usual public images):
#   BUILD_IMAGE    the Rust toolchain stage            (rust:1-bookworm)
#   RUNTIME_IMAGE  the runtime stage, glibc + /bin/sh  (debian:bookworm-slim)
#   PREBUILT       path in the build context of an agent-manager binary built elsewhere
#                  (for RUNTIME_IMAGE's glibc): skips the cargo build, so no Rust
#                  toolchain is needed (offline builds: scripts/base-image.sh makes
#                  local base images, tests/image.rs shows the whole recipe).
#   GIT_COMMIT     the commit `agent-manager --version` names (default: unknown)
# The Dockerfile works with the classic builder (DOCKER_BUILDKIT=0) as well as BuildKit.
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG PREBUILT=
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The dependencies alone first, against stand-in sources: a layer that is rebuilt only
# when the manifests change.
RUN if [ -z "$PREBUILT" ]; then \
        mkdir -p src benches \
        && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
        && echo 'fn main() {}' > benches/micro.rs \
        && cargo build --release --locked --bin agent-manager \
        && rm -rf src benches; \
    fi
COPY . .
# The commit `agent-manager --version` names (.git is not in the context; build.rs reads
# GIT_COMMIT): --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD); else "unknown".
# Declared after the dependency layer, so a new commit does not rebuild that.
ARG GIT_COMMIT=
# (touch: the stand-ins above are newer than the real sources' copied mtimes.)
RUN set -e; mkdir -p /out; \
    if [ -n "$PREBUILT" ]; then \
        cp "$PREBUILT" /out/agent-manager; \
    else \
        touch src/main.rs src/lib.rs; \
        cargo build --release --locked --bin agent-manager; \
        strip --strip-debug -o /out/agent-manager target/release/agent-manager; \
    fi; \
    chmod 0755 /out/agent-manager; \
    /out/agent-manager --version

FROM ${RUNTIME_IMAGE}
# A fixed unprivileged user, written straight into passwd/group so that any base with a
# shell will do (no useradd needed).
RUN echo 'agent-manager:x:10001:10001:agent-manager:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'agent-manager:x:10001:' >> /etc/group
# CA certificates for amqps:// (the slim runtime image has none).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/agent-manager /usr/local/bin/agent-manager
USER 10001:10001
# The admin endpoint (/ status page, /metrics, /healthz, /readyz) on every interface of
# the container, so that `-p 9464:9464`, Prometheus and other containers reach it.
# Publish it to the host's loopback (`-p 127.0.0.1:9464:9464`) or set ADMIN_TOKEN before
# exposing it further (README "Admin endpoint").
ENV ADMIN_LISTEN=0.0.0.0:9464
EXPOSE 9464
# Healthy while the manager itself says it is ready (its /readyz: consuming commands,
# Redis and Docker answering), asked on 127.0.0.1 within 5 s: a hung manager fails it,
# not only a service that is away. The failure and its fix are in
# `docker inspect --format '{{json .State.Health}}' agent-manager`.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/agent-manager", "check", "--ready", "--quiet", "--timeout-s", "5"]
# SIGTERM: stop consuming, finish in-flight commands, exit 0; agents keep running.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/agent-manager"]
CMD ["run"]
