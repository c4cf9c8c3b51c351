"""The committed stubs in specdec/v1 are what protos/ generates (run `make protos` after an edit)."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date(tmp_path):
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    status = protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"--python_out={tmp_path}",
                          f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos])
    assert status == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc wrote nothing"
    stale = [str(p) for p in generated if (ROOT / p).read_text() != (tmp_path / p).read_text()]
    assert stale == [], f"stale stubs, run `make protos`: {stale}"
