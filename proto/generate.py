"""Generate the Python code for the .proto files in this folder (run: python proto/generate.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def proto_sources() -> list[Path]:
    return sorted(PROTO_ROOT.glob("edgecascade/**/*.proto"))


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every source under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in proto_sources():
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(source.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {source.name}")
    return sorted(p for p in out_dir.glob("edgecascade/**/*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT)
    for path in generate(parser.parse_args().out):
        print(path.relative_to(path.parents[2]), file=sys.stderr)


if __name__ == "__main__":
    main()
