# Intake in a container: built in one stage, run as an unprivileged user in a slim image.
#   docker build -t intake .
#   docker run -p 25:2525 -p 8025:8025 -v intake-data:/var/lib/intake \
#     -e INTAKE_HTTP__ACCESS=public intake
# Inside, SMTP listens on 2525 and HTTP on 8025 (no privileged ports, no root); publish them
# on whatever host ports you like. Every setting can be given as INTAKE_SECTION__KEY.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked -p intake-server \
 && strip target/release/intake

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10025 intake \
 && useradd --system --uid 10025 --gid intake --home-dir /var/lib/intake --shell /usr/sbin/nologin intake \
 && mkdir -p /var/lib/intake /etc/intake \
 && chown intake:intake /var/lib/intake
COPY --from=build /src/target/release/intake /usr/local/bin/intake
COPY intake.example.toml /etc/intake/intake.example.toml
USER intake:intake
WORKDIR /var/lib/intake
ENV INTAKE_SMTP__LISTEN=0.0.0.0:2525 \
    INTAKE_HTTP__LISTEN=0.0.0.0:8025 \
    INTAKE_STORE__PATH=/var/lib/intake
VOLUME ["/var/lib/intake"]
EXPOSE 2525 8025
HEALTHCHECK --interval=30s --timeout=5s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8025 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/intake"]
CMD ["serve"]
