# The mlmarket API: `mlmarket serve`. The Helm chart's migration Job runs the same image as
# `mlmarket migrate`. Build from the repository root:
#   docker build -f Dockerfile.app -t mlmarket-app:0.1.0 .
# The base is pinned to a patch release; pin its digest too (python:3.11.13-slim-bookworm@sha256:…)
# where your registry policy asks for it.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# The lock file first (a layer that changes only with the dependencies): the core and the `api`
# extra, every version pinned and every file hashed (requirements/lock.sh writes it). No web UI
# packages (streamlit, pydeck) reach this image.
COPY requirements/api.txt ./requirements.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.txt
COPY pyproject.toml README.md ./
COPY app ./app
COPY ml_worker ./ml_worker
# A regular (not editable) install of mlmarket alone: its dependencies all came from the lock
# file, and pip check fails the build if the lock file misses one.
RUN pip install --no-cache-dir --no-deps . && pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mlmarket-app" \
      org.opencontainers.image.description="mlmarket API (FastAPI) and database migrations" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME and the data dir are emptyDir volumes in the chart, so the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MLMARKET_HOST=0.0.0.0 \
    MLMARKET_PORT=8000 \
    MLMARKET_DATA_DIR=/var/lib/mlmarket
RUN groupadd --system --gid 10001 mlmarket \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mlmarket \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/mlmarket
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/mlmarket
EXPOSE 8000
ENTRYPOINT ["mlmarket"]
CMD ["serve"]
