# syntax=docker/dockerfile:1
# mailflow-exporter: build a wheel, install it into a venv, run as an unprivileged user.
FROM python:3.11-slim AS build
# gssapi (Kerberos) compiles against the MIT Kerberos headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc=4:* libc6-dev=2.* libkrb5-dev=1.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
# exporter/example.yml links here: the wheel carries it for `mailflow-exporter example-config`.
COPY config/example.yml ./config/example.yml
# The git commit for --version and the startup log (.git is not in the build context):
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" --build-arg BRANCH="$(git branch --show-current)" .
ARG REVISION=unknown
ARG BRANCH=unknown
RUN python -m exporter.buildinfo --revision "$REVISION" --branch "$BRANCH" \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[kerberos]"

FROM python:3.11-slim
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mailflow-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Microsoft Exchange mail flow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="$REVISION"
# libgssapi-krb5-2 lets pyspnego use Kerberos (the usual Exchange remote PowerShell auth).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgssapi-krb5-2=1.* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10049 mailflow \
 && useradd --system --uid 10049 --gid mailflow --home-dir /var/lib/mailflow --create-home mailflow
COPY --from=build /opt/venv /opt/venv
# Every option with its default, to start a config.yml from (also printed by `mailflow-exporter example-config`).
COPY config/example.yml /etc/mailflow-exporter/example.yml
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    MAILFLOW_STATE_DIR=/var/lib/mailflow
USER 10049:10049
WORKDIR /var/lib/mailflow
EXPOSE 10049
# healthcheck follows the endpoint: plain HTTP, or TLS and basic auth from --web.config.file.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["mailflow-exporter", "healthcheck", "--config.file", "/etc/mailflow-exporter/config.yml", "--timeout", "4"]
ENTRYPOINT ["mailflow-exporter"]
CMD ["serve", "--config.file", "/etc/mailflow-exporter/config.yml"]
