# The marketing server. Builds without a system protoc (it is vendored).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p marketing-server

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 marketing
COPY --from=build /src/target/release/marketing-server /usr/local/bin/marketing-server
USER marketing
ENV MARKETING_GRPC_ADDR=0.0.0.0:50051 \
    MARKETING_DATA_DIR=/tmp/marketing \
    MARKETING_LOG_FORMAT=json
EXPOSE 50051
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["marketing-server", "healthcheck"]
ENTRYPOINT ["marketing-server"]
CMD ["serve"]
