"""Write a Triton model repository for the cloud models of model families.

Layout, one model per family (``<cloud.name>``), one folder per version::

    <repository>/<cloud.name>/config.pbtxt
    <repository>/<cloud.name>/labels.txt
    <repository>/<cloud.name>/<version>/model.onnx
    <repository>/<cloud.name>/<version>/model.py      (CPU variant only)

and the family model next to it (``cloud/triton/family.py``): the edge agent's KServe model
under the family's name, answered by the cloud model, one version per manifest::

    <repository>/<family>/config.pbtxt
    <repository>/<family>/labels.txt
    <repository>/<family>/<manifest version>/model.py      (cloud/triton/family_model.py)
    <repository>/<family>/<manifest version>/manifest.json (the pair it answers for)

CPU (default, local): the wheel's Triton runs the ONNX file through OpenVINO inside the
python backend (``cloud/triton/python_model.py`` copied as ``model.py``).
GPU (``gpu=True``, production in the edgecascade Triton image, ``deploy/triton.Dockerfile``:
NVIDIA's Triton container with ``edgecascade`` installed for the family model):
``onnxruntime_onnx`` on ``KIND_GPU``. TensorRT can be enabled there by adding to config.pbtxt::

    optimization { execution_accelerators { gpu_execution_accelerator : [
      { name : "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }
"""

from __future__ import annotations

import os
import shutil
import site
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from edgecascade.cloud.common.manifest import INPUT_NAME, LABELS_PARAMETER, OUTPUT_NAME, Manifest
from edgecascade.cloud.common.paths import family_dir as default_family_dir
from edgecascade.cloud.triton import family

MAX_BATCH_SIZE = 64
PREFERRED_BATCH_SIZES = (8, 32)
MAX_QUEUE_DELAY_US = 100
LABEL_FILE = "labels.txt"
CPU_MODEL_SOURCE = Path(__file__).with_name("python_model.py")
FAMILY_MODEL_SOURCE = Path(__file__).with_name("family_model.py")
FAMILY_INSTANCES = 2  # a family model instance waits for the cloud model: two overlap
KSERVE_TYPES = {
    "BYTES": mc.TYPE_STRING,
    "UINT8": mc.TYPE_UINT8,
    "FP32": mc.TYPE_FP32,
    "INT32": mc.TYPE_INT32,
}


def model_config(
    manifest: Manifest, versions: Iterable[int], *, gpu: bool = False
) -> mc.ModelConfig:
    """The schema-checked Triton config of a family's cloud model serving `versions`."""
    spec = manifest.cloud
    config = mc.ModelConfig(name=spec.name, max_batch_size=MAX_BATCH_SIZE)
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    config.input.add(name=INPUT_NAME, data_type=mc.TYPE_UINT8, dims=spec.input_shape)
    config.output.add(
        name=OUTPUT_NAME,
        data_type=mc.TYPE_FP32,
        dims=[len(manifest.labels)],
        label_filename=LABEL_FILE,
    )
    config.parameters[LABELS_PARAMETER].string_value = manifest.labels_sha256
    config.dynamic_batching.preferred_batch_size.extend(PREFERRED_BATCH_SIZES)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    if gpu:
        config.platform = "onnxruntime_onnx"
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    else:
        config.backend = "python"
        # One instance: OpenVINO already spreads a batch over every core.
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
        config.parameters["site_packages"].string_value = os.pathsep.join(_site_packages())
        config.parameters["performance_hint"].string_value = "LATENCY"
    return config


def write_model(
    manifest: Manifest, family_dir: Path, repository: Path, *, gpu: bool = False
) -> Path:
    """Write (or add a version to) the family's cloud model in `repository`; return its folder.

    Versions already in the model folder stay listed in the version policy (a repository holds
    every cloud version in use; `set_version_policy` narrows what Triton serves).
    """
    manifest.verify(family_dir)
    spec = manifest.cloud
    onnx = _onnx_file(manifest)
    model_dir = Path(repository) / spec.name
    version_dir = model_dir / str(spec.version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.copyfile(Path(family_dir) / onnx, version_dir / "model.onnx")
    if not gpu:
        shutil.copyfile(CPU_MODEL_SOURCE, version_dir / "model.py")
    _write_labels(model_dir, manifest.labels)
    config = model_config(manifest, version_folders(model_dir), gpu=gpu)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return model_dir


def family_model_config(
    manifest: Manifest, versions: Iterable[int], *, gpu: bool = False
) -> mc.ModelConfig:
    """The Triton config of the family model serving manifest `versions`: the edge agent's
    inputs and outputs (max_batch_size 0, the batch in `dims`; `max_batch` images a request);
    edge_model and cloud_model are `manifest`'s pair. On CPU its python stub is pointed at this
    interpreter's site folders (the local wheel's Triton); the GPU image installs edgecascade."""
    config = mc.ModelConfig(name=manifest.family, backend="python", max_batch_size=0)
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    inputs, outputs = family.tensors(len(manifest.labels))
    for name, kind, dims in inputs:
        config.input.add(name=name, data_type=KSERVE_TYPES[kind], dims=dims, optional=True)
    for name, kind, dims in outputs:
        config.output.add(name=name, data_type=KSERVE_TYPES[kind], dims=dims)
    config.output[0].label_filename = LABEL_FILE  # probabilities: Triton's classification
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=FAMILY_INSTANCES)
    parameters = {
        LABELS_PARAMETER: manifest.labels_sha256,
        "edge_model": manifest.edge.key,
        "cloud_model": manifest.cloud.key,
        "max_batch": str(MAX_BATCH_SIZE),
    }
    if not gpu:
        parameters["site_packages"] = os.pathsep.join(_site_packages())
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def write_family_model(manifest: Manifest, repository: Path, *, gpu: bool = False) -> Path:
    """Write (or add a version to) the family model in `repository` (`gpu`: for the edgecascade
    Triton image); return its folder. The cloud model it asks is written by `write_model`."""
    model_dir = Path(repository) / manifest.family
    version_dir = model_dir / str(manifest.version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.copyfile(FAMILY_MODEL_SOURCE, version_dir / "model.py")
    manifest.save(version_dir / family.PAIR_FILE)
    _write_labels(model_dir, manifest.labels)
    config = family_model_config(manifest, version_folders(model_dir), gpu=gpu)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return model_dir


def version_folders(model_dir: Path) -> list[int]:
    """The versions that have a folder in a model folder, lowest first."""
    return sorted(int(d.name) for d in Path(model_dir).iterdir() if d.is_dir() and d.name.isdigit())


def set_version_policy(model_dir: Path, versions: Iterable[int]) -> None:
    """List exactly `versions` in the model's version policy (Triton serves those on load)."""
    config = read_config(model_dir)
    del config.version_policy.specific.versions[:]
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    (Path(model_dir) / "config.pbtxt").write_text(text_format.MessageToString(config))


def write_repository(
    manifests: Iterable[Manifest],
    repository: Path,
    *,
    gpu: bool = False,
    root: Path | None = None,
) -> list[Path]:
    """Write the cloud model of every manifest (family folders under `root`) and its family
    model; return the cloud models' folders."""
    Path(repository).mkdir(parents=True, exist_ok=True)
    written = []
    for manifest in manifests:
        written.append(
            write_model(manifest, default_family_dir(manifest.family, root), repository, gpu=gpu)
        )
        write_family_model(manifest, repository, gpu=gpu)
    return written


def read_config(model_dir: Path) -> mc.ModelConfig:
    """Parse a model folder's config.pbtxt back into a ModelConfig."""
    return text_format.Parse((Path(model_dir) / "config.pbtxt").read_text(), mc.ModelConfig())


def _write_labels(model_dir: Path, labels: list[str]) -> None:
    """The label file (one label a line) that Triton's classification extension reads."""
    (model_dir / LABEL_FILE).write_text("".join(f"{label}\n" for label in labels))


def _onnx_file(manifest: Manifest) -> str:
    onnx = [rel for rel in manifest.cloud.files if rel.endswith(".onnx")]
    if len(onnx) != 1:
        raise ValueError(f"{manifest.family}: cloud model needs exactly one .onnx file, got {onnx}")
    return onnx[0]


def _site_packages() -> list[str]:
    """Site-packages of the running interpreter, so model.py imports the same numpy/openvino."""
    return [p for p in site.getsitepackages() if Path(p).is_dir()]
