# syntax=docker/dockerfile:1
# Stage 1: build the otelflow wheel and collect wheels of every dependency (all of them ship
# manylinux wheels). Its extensions need gcc, g++ and the headers of RE2 and nghttp2 (the
# image's Python brings its own); the compilers and pip's build tooling stay in this stage.
FROM python:3.11-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev libre2-dev libnghttp2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fast]"

# Stage 2: the runtime image: wheels and the shared libraries of RE2 and nghttp2 only, no build tools, non-root.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="otelflow" \
      org.opencontainers.image.description="OpenTelemetry-Collector-style pipeline in Python"
COPY --from=build /wheels /wheels
# The project's own wheel from a local wheelhouse (--no-index): its pins are in pyproject.toml.
# hadolint ignore=DL3008,DL3013
RUN apt-get update \
    && apt-get install -y --no-install-recommends libre2-9 libnghttp2-14 \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir --no-index --find-links=/wheels otelflow[fast] \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin otelflow \
    && mkdir -p /etc/otelflow /var/lib/otelflow \
    && chown otelflow /var/lib/otelflow
COPY --chown=otelflow config/default.yaml /etc/otelflow/config.yaml
USER 10001
# OTLP gRPC, OTLP HTTP, self-metrics, health_check
EXPOSE 4317 4318 8888 13133
ENV OTELFLOW_GRPC_ENDPOINT=0.0.0.0:4317 \
    OTELFLOW_HTTP_ENDPOINT=0.0.0.0:4318 \
    OTELFLOW_METRICS_ADDRESS=0.0.0.0:8888 \
    OTELFLOW_HEALTH_ENDPOINT=0.0.0.0:13133
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:13133/health', timeout=2).status != 200)"]
ENTRYPOINT ["otelflow"]
CMD ["run", "--config", "/etc/otelflow/config.yaml"]
