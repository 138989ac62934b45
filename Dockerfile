# jwksgate container image. Build it with scripts/build-image (buildah; no Docker engine needed).
#
# The base image is pinned by digest (the tag says which one it is; the digest is what is pulled):
# bump both together when the base image is updated.
#
# Two stages: the builder installs jwksgate and its dependencies into a virtualenv; the final
# stage copies only that virtualenv onto a clean python slim image, so neither the source tree nor
# the build tools ship. All runtime dependencies have manylinux wheels, so no compiler is needed
# in the builder either.
#
# What the image guarantees at run time (the manifests in helm/jwksgate rely on it):
#   - runs as UID/GID 10001, never root;
#   - writes nothing outside /tmp, so readOnlyRootFilesystem works with an emptyDir on /tmp;
#   - expects its config at /etc/jwksgate/config.yaml (mount a ConfigMap there);
#   - webhook listener on 8080, admin (/livez /readyz /metrics) on 9090;
#   - SIGTERM drains in-flight requests for shutdown_grace_seconds, then exits 0.

FROM docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ ./gateway/

# A non-editable install: the venv holds the package itself, not a link back to /src. pip
# compiles the bytecode here, so the read-only final image never needs to write any. The fast
# extra adds uvloop (wheels for amd64 and arm64) for JWKSGATE_EVENT_LOOP=uvloop; the default
# loop is asyncio's (bench/RESULTS.md says why).
RUN python -m venv /opt/jwksgate \
    && /opt/jwksgate/bin/pip install --no-cache-dir "/src[fast]"


FROM docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

LABEL org.opencontainers.image.title="jwksgate" \
      org.opencontainers.image.description="Verifying reverse proxy for JWT-signed webhook pushes (JWKS)" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes.
# PYTHONUNBUFFERED: one JSON log line per request must reach stdout at once, not on exit.
# HOME: UID 10001 has no passwd entry; point anything that wants a home at the writable /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PATH=/opt/jwksgate/bin:$PATH

COPY --from=builder /opt/jwksgate /opt/jwksgate

USER 10001:10001
EXPOSE 8080 9090
STOPSIGNAL SIGTERM

# No HEALTHCHECK: Kubernetes ignores it (the chart's probes use /livez and /readyz), buildah's
# default OCI format drops it, and the admin port is configurable, so a fixed URL would lie.
ENTRYPOINT ["jwksgate"]
CMD ["run", "--config", "/etc/jwksgate/config.yaml"]
