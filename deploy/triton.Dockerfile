# Triton for the cloud tier: NVIDIA's Triton container with edgecascade installed, so that the
# python backend can run each family's model (cloud/triton/family_model.py: the edge agent's
# KServe inputs and outputs, answered by the cloud model on the GPU). Build from the repository
# root:
#   docker build -f deploy/triton.Dockerfile -t edgecascade-triton .
# 24.12 is the first release on Ubuntu 24.04, whose Python 3.12 edgecascade supports (3.11+).
# The model repository, certificates and the admin key are mounted at run time (k8s/base).
FROM nvcr.io/nvidia/tritonserver:24.12-py3
WORKDIR /opt/edgecascade
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY edge edge
COPY router router
COPY cloud cloud
# The system Python is the one the python backend's stub embeds (PEP 668 marks it external).
RUN pip install --no-cache-dir --break-system-packages . \
    && python3 -c "import edgecascade.cloud.triton.family" \
    && id triton-server
USER triton-server
