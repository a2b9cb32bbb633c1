"""The separately deployed router gateway: HAProxy in front of Triton, ModelSync beside it."""
