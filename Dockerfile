# hpo-service image: the `hpo` command with the server extra (API, migrations, worker loop).
# Used by docker-compose.yml for every service; the Ray services build it with EXTRAS=server,worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Extras to install; e.g. --build-arg EXTRAS=server,worker once the worker extra has content.
ARG EXTRAS=server

# Build from a scratch copy of the sources (only what the package needs; README is optional).
WORKDIR /src
COPY pyproject.toml README.m[d] ./
COPY hpo_service ./hpo_service
COPY trainers ./trainers
COPY migrations ./migrations
RUN pip install "/src[${EXTRAS}]" && rm -rf /src

# Search spaces are data next to the package in the repository, not part of the wheel.
COPY search_spaces /app/search_spaces
ENV HPO_SEARCH_SPACE_DIR=/app/search_spaces

# Non-root user. /checkpoints and ~/.ray exist (owned by it) so named volumes mounted there
# start writable (~/.ray holds the Ray cluster's auth token in docker-compose.yml); /app is
# the working directory for anything relative (e.g. the default .hpo/).
RUN useradd --create-home --uid 10001 --user-group hpo \
    && mkdir -p /checkpoints /home/hpo/.ray \
    && chown -R hpo:hpo /checkpoints /app /home/hpo/.ray
WORKDIR /app
USER hpo

EXPOSE 8000
CMD ["hpo", "serve", "--host", "0.0.0.0", "--port", "8000"]
