"""The edge agent: OpenVINO runtime, the Cascade and KServe gRPC services, metrics, updates."""
