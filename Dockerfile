# The local stack (`eventstack local`: the AWS emulation, the API, stream processing and the archive) in a
# container. `make docker-run` builds and starts it through compose.yaml, on the ports `make run` uses.
#
# Two stages: `build` makes a virtual environment of the runtime's pinned dependencies
# (requirements-local.txt: no CDK, no test tools), from wheels only, so no compiler is needed; the final
# image is a slim Python with that environment and the code, no pip cache, no build tools, run by a
# non-root user. Inside the container the API listens on 0.0.0.0 (the only way a published port reaches
# it); outside one, `eventstack local` keeps its default, 127.0.0.1.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ONLY_BINARY=:all:
COPY requirements-local.txt /src/requirements-local.txt
COPY lambdas/requirements.txt /src/lambdas/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /src/requirements-local.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/eventstack eventstack
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code as a checkout lays it out: eventstack/ finds the functions' packages in lambdas/ beside it.
COPY eventstack/ /app/eventstack/
COPY lambdas/ /app/lambdas/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/lambdas \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/_local/status', timeout=4)"]
ENTRYPOINT ["python", "-m", "eventstack", "local"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--aws-port", "5000"]
