FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . gunicorn && PRBOT_TOOLS_DIR=/usr/local/bin scripts/fetch-tools
USER 65534
ENV PORT=8080
CMD ["sh", "-c", "exec gunicorn --bind 0.0.0.0:$PORT 'prbot.web:create_app()'"]
