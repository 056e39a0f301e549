# agent-manager: the supervisor container.
#
#   docker build -t agent-manager .
#   docker run -d --name agent-manager \
#     -v /var/run/docker.sock:/var/run/docker.sock --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -e RABBITMQ_URL=amqp://user:pass@rabbitmq:5672/%2f -e REDIS_URL=redis://redis:6379/0 \
#     agent-manager
#
# The base images are build arguments so that a machine without a registry can pass
# locally built ones (e.g. from debootstrap + docker import).
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin agent-manager

FROM ${RUNTIME_IMAGE}
# A fixed unprivileged user; it reaches the Docker socket through the socket's group,
# given at run time with --group-add.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin agent-manager
COPY --from=build /src/target/release/agent-manager /usr/local/bin/agent-manager
COPY config/default.toml /etc/agent-manager/default.toml
USER 10001
ENV RUST_LOG=info,lapin=warn
ENTRYPOINT ["/usr/local/bin/agent-manager"]
CMD ["run"]
