# The edge agent with one family's artifacts. Build from the repository root after
# `edgecascade models build --family fashion`:
#   docker build -f deploy/edge.Dockerfile -t edgecascade-edge .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY edge edge
COPY router router
COPY cloud cloud
RUN pip install --no-cache-dir ".[edge]"
COPY artifacts/fashion artifacts/fashion
ENV EDGECASCADE_ARTIFACTS=/app/artifacts
EXPOSE 50051
ENTRYPOINT ["edgecascade", "edge", "serve", "--host", "0.0.0.0", "--port", "50051"]
CMD ["--family", "fashion", "--cloud-url", "triton:8001"]
