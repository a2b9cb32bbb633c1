"""The windowed ClassifyStream loop of `edge run` and the demo is the Python client's
(`edgecascade.client.stream`): both send frames the same way."""

from edgecascade.client.stream import classify_stream

__all__ = ["classify_stream"]
