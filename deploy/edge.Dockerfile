# The edge agent with one family's artifacts (models and manifest: nothing secret). Build from
# the repository root after `edgecascade models build --family fashion`:
#   docker build -f deploy/edge.Dockerfile -t edgecascade-edge .
# Certificates, tokens and the trusted signing keys are mounted at run time (compose.yaml
# secrets), never copied in: edge.Dockerfile.dockerignore keeps key files out of the context.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home edgecascade
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY edge edge
COPY router router
COPY cloud cloud
RUN pip install --no-cache-dir ".[edge]"
COPY artifacts/fashion artifacts/fashion
# The agent writes followed model versions into <artifacts>/edge-cache.
RUN mkdir -p artifacts/edge-cache && chown edgecascade artifacts/edge-cache
ENV EDGECASCADE_ARTIFACTS=/app/artifacts
USER 10001
EXPOSE 50051
ENTRYPOINT ["edgecascade", "edge", "serve", "--host", "0.0.0.0", "--port", "50051"]
CMD ["--family", "fashion", "--cloud-url", "triton:8001"]
