# The router gateway: HAProxy in front of the Triton replicas (k8s/triton.yaml), run by
# `edgecascade router serve`. Build from the repository root:
#   docker build -f deploy/gateway.Dockerfile -t edgecascade-gateway .
# CMD: the StatefulSet's per-pod names in namespace default, in full (HAProxy re-resolves them
# without the search list); k8s/gateway.yaml passes its own namespace's, and its certificates,
# caller file and Triton's admin key, mounted from Secrets: none is in the image.
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home edgecascade
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY edge edge
COPY router router
COPY cloud cloud
RUN pip install --no-cache-dir ".[gateway]"
USER 10001
EXPOSE 8001 9101
ENTRYPOINT ["edgecascade", "router", "serve", "--host", "0.0.0.0", "--port", "8001", "--metrics-port", "9101"]
CMD ["--upstream", "triton-0.triton.default.svc.cluster.local:8001", "--upstream", "triton-1.triton.default.svc.cluster.local:8001"]
