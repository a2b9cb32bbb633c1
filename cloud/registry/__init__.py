"""The model registry: published versions, their rollout to Triton, ModelSync serving them."""
