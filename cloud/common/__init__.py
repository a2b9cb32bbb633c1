"""What every tier shares: the transport (how gRPC servers, channels and clients are built)."""
