"""The house rules that code review alone would let slip: layers import only downward, and
public constructors with many parameters document them."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import simai

ROOT = Path(simai.__file__).parent

# A module may import from its own layer and from layers of a lower rank.
RANK = {
    "checks": 0,
    "_version": 0,
    "store": 1,
    "launch": 2,
    "workflow": 3,
    "models": 4,
    "steer": 5,
    "observe": 5,
    "cli": 6,
    "__init__": 6,
}


def layer(module: str) -> str:
    """The layer of a dotted module name inside simai ("simai" itself is the top package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def simai_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every simai module `path` imports, lazy imports included."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [
                        *package.split(".")[: len(package.split(".")) - node.level + 1],
                        *filter(None, [base]),
                    ]
                )
            names = [base] if base != "simai" else [f"simai.{a.name}" for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "simai" or n.startswith("simai.")]
    return found


def modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((path, ".".join(parts)))
    return out


def test_every_module_belongs_to_a_known_layer():
    unknown = {layer(m) for _, m in modules()} - set(RANK)
    assert not unknown, f"add these to RANK in tests/test_layers.py: {sorted(unknown)}"


def test_layers_import_only_downward():
    upward = []
    for path, module in modules():
        mine = layer(module)
        for line, imported in simai_imports(path, module):
            theirs = layer(imported) if imported != "simai" else "__init__"
            if theirs not in RANK:  # simai.__version__ and the like resolve to the package
                theirs = "__init__"
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} ({mine}) imports {imported}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from simai.workflow import Workflow\n")
    found = simai_imports(bad, "simai.store.bad")
    assert found == [(2, "simai.workflow")]
    assert RANK[layer(found[0][1])] > RANK[layer("simai.store.bad")]


def public_classes() -> list[type]:
    """Every class a public module of simai defines under a public name."""
    classes = {}
    for info in pkgutil.walk_packages(simai.__path__, "simai."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and obj.__module__ == mod.__name__ and name[0] != "_":
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [classes[k] for k in sorted(classes)]


@pytest.mark.parametrize("cls", public_classes(), ids=lambda c: c.__qualname__)
def test_public_classes_document_themselves(cls):
    assert inspect.getdoc(cls), f"{cls.__module__}.{cls.__qualname__} has no docstring"
    if "__init__" not in vars(cls) and not hasattr(cls, "__dataclass_fields__"):
        return
    params = [p for p in inspect.signature(cls).parameters.values()]
    if len(params) > 6:
        doc = inspect.getdoc(cls) or ""
        assert "Parameters\n----------" in doc or "Attributes\n----------" in doc, (
            f"{cls.__qualname__} takes {len(params)} parameters: list them in a numpy-style "
            "'Parameters' section of its docstring ('Attributes' for a record)"
        )
        missing = [p.name for p in params if f"{p.name} :" not in doc and p.kind.value < 2]
        assert not missing, f"{cls.__qualname__}'s section misses {missing}"
