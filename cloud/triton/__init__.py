"""NVIDIA Triton: the model repository, a local server, its model-control API, its CLI."""
