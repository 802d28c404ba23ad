# flex-bridge: the bridge's image (docs/deployment.md, "The container image").
#
#   docker build -t flex-bridge:0.1.0 .
#   docker run --env-file bridge.env -v flex-bridge-data:/var/lib/flex-bridge -p 8000:8000 flex-bridge:0.1.0
#
# Two stages: the first builds a virtual environment from the pins in constraints.txt (no dev
# extras); the second copies only that environment onto a fresh slim image, so pip's caches,
# the source tree and anything a build needed stay behind. Checked by tests/test_deployment.py.

# ---------------------------------------------------------------------------------- build
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/flex-bridge

# Every package from the pins. PIP_CONSTRAINT reaches the isolated build environment too, so
# the build backend (setuptools, wheel) is pinned as well. The source is copied before the one
# install, so any change to it reinstalls the dependencies too (pip cannot install only a
# project's dependencies): simple over a faster rebuild.
COPY constraints.txt pyproject.toml README.md ./
ENV PIP_CONSTRAINT=/src/constraints.txt
COPY flex_bridge ./flex_bridge
RUN /opt/flex-bridge/bin/pip install --no-cache-dir -c constraints.txt . \
    && /opt/flex-bridge/bin/flex-bridge --help > /dev/null

# -------------------------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="flex-bridge" \
      org.opencontainers.image.description="Sync-first coordination between Twilio TaskRouter, Sync and Flex plugins" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged uid and gid (Kubernetes' runAsNonRoot can check a number), and the
# journal's directory owned by it. A named volume mounted there inherits that ownership; a
# host directory must be chown'ed to 10001:10001.
RUN groupadd --system --gid 10001 flexbridge \
    && useradd --system --uid 10001 --gid flexbridge --no-create-home \
       --home-dir /var/lib/flex-bridge --shell /usr/sbin/nologin flexbridge \
    && install -d -o flexbridge -g flexbridge -m 0750 /var/lib/flex-bridge

COPY --from=build /opt/flex-bridge /opt/flex-bridge

# sqlite:////var/lib/flex-bridge/journal.db: four slashes, an absolute path (on the volume).
# Several instances need FLEX_BRIDGE_JOURNAL=postgresql://... instead (docs/deployment.md).
ENV PATH=/opt/flex-bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLEX_BRIDGE_JOURNAL=sqlite:////var/lib/flex-bridge/journal.db

WORKDIR /var/lib/flex-bridge
VOLUME ["/var/lib/flex-bridge"]
USER 10001:10001

EXPOSE 8000

# Python's standard library, as the slim image has no curl. /healthz: the process serves
# (readiness, /readyz, also checks Twilio and the journal: leave it to the orchestrator).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["flex-bridge"]
CMD ["serve", "--host", "0.0.0.0"]
