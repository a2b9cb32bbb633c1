"""edgecascade: OpenVINO at the edge, NVIDIA Triton in the cloud, gRPC in between.

Installed, `edgecascade.edge`, `edgecascade.router` and `edgecascade.cloud` map to the
repository's top-level folders, `edgecascade.v1` holds the generated wire contract and
`edgecascade.client` the Python client of the agent."""
