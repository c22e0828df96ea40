# riskmon's container image.
#
#   docker build -t riskmon:0.1.0 .
#   docker run --rm -p 9817:9817 -v riskmon-state:/var/lib/riskmon \
#       -v "$PWD/my-riskmon.yaml:/etc/riskmon/riskmon.yaml:ro" riskmon:0.1.0
#
# Two stages. The build stage installs riskmon with deploy/install.sh, the same script
# tests/test_deploy.py runs into a clean virtual environment, so the image holds what
# the tests check. The final stage gets only that virtual environment (riskmon and its
# runtime dependencies: no pip, no setuptools, no compiler, no pip cache), the shipped
# rules and an example config, and runs as an unprivileged user.
#
# Layout of the final image:
#   /opt/riskmon/                virtual environment; /opt/riskmon/bin is on PATH
#   /etc/riskmon/riskmon.yaml    the config `riskmon run` reads by default; the one baked
#                                in is deploy/compose/riskmon.yaml (simulator + Mosquitto)
#   /etc/riskmon/rules/          the shipped rules (rules/*.yaml)
#   /etc/riskmon/secrets/        where that config expects its *_file credentials
#   /var/lib/riskmon/            state_dir (SQLite outbox, alert state): a volume
#
# Lint: .venv/bin/hadolint Dockerfile (run by the tests; .hadolint.yaml explains
# every ignored rule).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor/ monitor/
COPY deploy/install.sh deploy/install.sh
RUN sh deploy/install.sh /opt/riskmon

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="riskmon" \
      org.opencontainers.image.description="Real-time risk monitoring daemon for trading accounts"

# The base image's own pip, setuptools and wheel go: nothing is built or installed at
# run time. A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and
# volumes can be prepared for it (fsGroup 10001 in deploy/kubernetes/statefulset.yaml).
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 riskmon \
    && useradd --system --no-log-init --uid 10001 --gid riskmon \
       --home-dir /var/lib/riskmon --shell /usr/sbin/nologin riskmon \
    && install -d -o riskmon -g riskmon -m 0750 /var/lib/riskmon

COPY --from=build /opt/riskmon /opt/riskmon
COPY rules/*.yaml /etc/riskmon/rules/
COPY deploy/compose/riskmon.yaml /etc/riskmon/riskmon.yaml

ENV PATH=/opt/riskmon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/riskmon
VOLUME ["/var/lib/riskmon"]
EXPOSE 9817

# /healthz answers 200 while riskmon can alert (503 with the reasons otherwise: docker ps
# shows the container unhealthy; Docker restarts nothing for it). The image has no curl,
# so Python's urllib asks; set RISKMON_HEALTHZ_URL when http.listen is not port 9817.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = os.environ.get('RISKMON_HEALTHZ_URL', 'http://127.0.0.1:9817/healthz'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop, Kubernetes) stops polling, flushes pending events for up to
# 10 s and publishes the offline status: give the container more than that to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/riskmon/bin/riskmon"]
CMD ["run", "--config", "/etc/riskmon/riskmon.yaml"]
