"""Generate Python code for the contracts in protos/, or check the committed code is current.

Usage:
    python scripts/protos.py            # regenerate in place
    python scripts/protos.py --check    # exit 1 and name the stale files when they differ

The generated modules sit beside their .proto files, so `protos/` is an import root:
`streamlearn.v1.sample_pb2`, `inference.grpc_service_pb2`.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# Packages whose descriptors go into a private pool instead of protobuf's default one:
# tritonclient registers the same `inference.*` symbols in the default pool, and one process
# (a test, a user's script) must be able to import both.
PRIVATE_POOL_PACKAGES = {"inference": "from inference import _pool as _private_pool"}


def proto_files() -> list[str]:
    """Every .proto under protos/, relative to it, in a stable order."""
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc (the one bundled with grpcio-tools) on every contract into `out`."""
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for stub in out.rglob("*_pb2_grpc.py"):
        source = ROOT / stub.relative_to(out).with_name(stub.name.replace("_pb2_grpc.py", ".proto"))
        if "service " not in source.read_text():
            stub.unlink()  # the gRPC module of a file without services is empty noise
    for package, pool_import in PRIVATE_POOL_PACKAGES.items():
        for module in (out / package).glob("*_pb2.py"):
            _use_private_pool(module, pool_import)


def _use_private_pool(module: Path, pool_import: str) -> None:
    """Make a generated module register its descriptors in its package's private pool."""
    text = module.read_text()
    default = "_descriptor_pool.Default().AddSerializedFile("
    if default not in text:
        raise SystemExit(
            f"{module}: generated code changed shape, cannot move it to a private pool"
        )
    text = text.replace(default, "_private_pool.POOL.AddSerializedFile(")
    text = text.replace(
        "_sym_db = _symbol_database.Default()\n",
        f"_sym_db = _symbol_database.Default()\n{pool_import}\n",
        1,
    )
    module.write_text(text)


def generated_files(root: Path) -> set[str]:
    """Relative paths of generated modules under `root`."""
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> int:
    """Compare fresh output with what is committed; print the differences."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, present = generated_files(fresh), generated_files(ROOT)
        stale = sorted(
            name
            for name in expected & present
            if not filecmp.cmp(fresh / name, ROOT / name, shallow=False)
        )
        problems = (
            [f"missing: {n}" for n in sorted(expected - present)]
            + [f"orphan: {n}" for n in sorted(present - expected)]
            + [f"stale: {n}" for n in stale]
        )
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print("generated protobuf code is not current: run `make protos`", file=sys.stderr)
        return 1
    print(f"protobuf code current ({len(expected)} files)")
    return 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    if parser.parse_args().check:
        return check()
    generate(ROOT)
    print(f"generated {len(generated_files(ROOT))} files from {len(proto_files())} protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
