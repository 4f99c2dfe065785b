# prbot, the GitHub App: the web service with one in-process queue worker (`prbot serve`).
# Scale out by running more containers with `prbot worker` as their command and a shared
# PRBOT_QUEUE_URL=redis://… (see README, "Deployment").  Every command below is exercised in CI:
# `pip install .`, scripts/fetch-tools, the CMD and the HEALTHCHECK (tests/test_service_process.py),
# rendering as user 65534 in the bubblewrap jail (tests/test_jail.py; see README for the seccomp profile).
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates bubblewrap \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . \
 && PRBOT_TOOLS_DIR=/usr/local/bin scripts/fetch-tools \
 && mkdir -p /data && chown 65534:65534 /data
ENV PORT=8080 PRBOT_DATA_DIR=/data HOME=/tmp PYTHONUNBUFFERED=1
VOLUME /data
USER 65534
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]
CMD ["prbot", "serve", "--host", "0.0.0.0"]
