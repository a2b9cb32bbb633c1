"""The generated code committed next to the .proto files must match the sources."""

import subprocess
import sys
from pathlib import Path

PROTO = Path(__file__).resolve().parents[2] / "proto"


def test_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, str(PROTO / "generate.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc generated nothing"
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (PROTO / p).read_bytes()]
    assert not stale, f"stale generated code, run `make proto`: {stale}"
