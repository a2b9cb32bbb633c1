# The router gateway: HAProxy in front of the Triton replicas (k8s/base/triton.yaml), run by
# `edgecascade router serve`. Build from the repository root:
#   docker build -f deploy/gateway.Dockerfile -t edgecascade-gateway .
# CMD: follow the Triton StatefulSet's replicas through its headless Service's SRV records in
# namespace default; k8s/base/gateway.yaml passes its own namespace's, and its certificates,
# caller file and Triton's admin key, mounted from Secrets: none is in the image. Port 8003:
# plaintext gRPC health for the kubelet's readiness probe (SERVING while a Triton is ready).
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
EXPOSE 8000 8001 8003 9101
ENTRYPOINT ["edgecascade", "router", "serve", "--host", "0.0.0.0", "--port", "8001", "--health-port", "8003", "--metrics-port", "9101"]
CMD ["--discover", "_grpc._tcp.triton.default.svc.cluster.local"]
