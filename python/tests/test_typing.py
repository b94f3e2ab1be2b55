"""The wheel ships its types: `py.typed`, and a stub of the native module that names every
method the module has (a method added in Rust without its stub fails here)."""

from __future__ import annotations

import ast
from pathlib import Path

import groupcall
from groupcall import _native

PACKAGE = Path(groupcall.__file__).parent


def stub_classes() -> dict[str, set[str]]:
    tree = ast.parse((PACKAGE / "_native.pyi").read_text())
    return {
        node.name: {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AnnAssign)) and hasattr(n, "name")}
        | {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_the_wheel_ships_py_typed_and_a_stub_of_every_native_method():
    assert (PACKAGE / "py.typed").exists()
    stubs = stub_classes()
    for name in ["Completions", "Options", "Frame", "NativeCall", "LocalBackend", "LineBackend"]:
        cls = getattr(_native, name)
        public = {a for a in vars(cls) if not a.startswith("_")}
        missing = public - stubs.get(name, set())
        assert not missing, f"_native.pyi lacks {name}.{sorted(missing)}"
    for exc in ["GroupcallError", "SourceError", "ServerError", "CallEndedError", "ConfigError", "BusyError", "DeviceError"]:
        assert exc in stubs and issubclass(getattr(_native, exc), Exception)
