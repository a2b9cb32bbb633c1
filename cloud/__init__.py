"""The cloud side: model families and their builders, manifests, the Triton model repository
and a local Triton launcher. Imports nothing from `router` or `edge`."""
