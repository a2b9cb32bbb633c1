"""Shared torch -> ONNX export for family models (needs the "build" extra: torch, onnx)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from edgecascade.cloud.common.manifest import INPUT_NAME, OUTPUT_NAME

OPSET = 17


class Uint8Nhwc(nn.Module):
    """Wrap a float NCHW network so it takes uint8 NHWC images: y = net((x - offset) / scale)."""

    def __init__(self, net: nn.Module, offset: float, scale: float) -> None:
        super().__init__()
        self.net = net
        self.offset = offset
        self.scale = scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        logits: torch.Tensor = self.net((x - self.offset) / self.scale)
        return logits


def export_onnx(model: nn.Module, path: Path, size: int, channels: int) -> Path:
    """Export `model` (uint8 [N, size, size, channels] -> logits) with a dynamic batch axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    dummy = torch.zeros((1, size, size, channels), dtype=torch.uint8)
    with warnings.catch_warnings():
        # the TorchScript exporter cannot constant-fold some Slice ops; the graph is still exact
        warnings.filterwarnings("ignore", message="Constant folding")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # dynamo=False is chosen
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        )
    return path
