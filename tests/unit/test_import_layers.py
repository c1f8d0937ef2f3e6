"""The package's structure: every ``pneumo`` import points down (or sideways within a layer) the layer order
documented in ``docs/decisions/0006-layers.md``, and no chain of imports comes back to where it started.

Imports are read with ``ast`` from every module under ``src/pneumo`` (top-level and function-level imports
alike: a lazy import is still a dependency). ``from pneumo.x import y`` counts as an import of the module
``pneumo.x.y`` when that module exists, else of ``pneumo.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: lowest first. A module may import its own layer or any layer below it, never one above.
#: Each entry names packages or modules; the longest matching prefix decides a module's layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("pneumo", "pneumo.errors", "pneumo.config", "pneumo.files", "pneumo.extras")),
    ("array ops", ("pneumo.preprocess", "pneumo.postprocess")),
    ("records", ("pneumo.types", "pneumo.audit_actions")),
    ("io", ("pneumo.io",)),
    ("outputs", ("pneumo.outputs", "pneumo.display")),
    ("data", ("pneumo.data", "pneumo.samples")),
    ("decoding", ("pneumo.decode",)),
    ("models", ("pneumo.models",)),
    ("evaluation", ("pneumo.evaluation",)),
    ("ensemble", ("pneumo.ensemble",)),
    ("training", ("pneumo.training",)),
    ("inference", ("pneumo.inference",)),
    ("export", ("pneumo.export",)),
    ("pipeline", ("pneumo.pipeline",)),
    ("service", ("pneumo.service",)),
    ("integrations", ("pneumo.dicom_out", "pneumo.node", "pneumo.store")),
    ("front ends", ("pneumo.api", "pneumo.console", "pneumo.web")),
    ("commands", ("pneumo.commands",)),
    ("entry points", ("pneumo.cli", "pneumo.__main__")),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "pneumo").rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``pneumo`` modules ``path`` (module ``name``) imports, resolved to existing module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            if target == "pneumo" or target.startswith("pneumo."):
                while target not in known and "." in target:  # `import pneumo.x.attr` -> pneumo.x
                    target = target.rpartition(".")[0]
                found.add(target)
    found.discard(name)
    return found


def layer_of(name: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or (prefix != "pneumo" and name.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"module {name} is in no layer: add it to LAYERS (and to docs/decisions/0006-layers.md)")
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        layer_of(name)


def test_imports_only_point_down_the_layers(graph):
    upward = []
    for name, targets in graph.items():
        for target in targets:
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports running back up the layers:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_checks_can_fail():
    """The checkers catch what they are meant to: an upward import and a cycle in a made-up graph."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert layer_of("pneumo.service") > layer_of("pneumo.ensemble.fuse") > layer_of("pneumo.models.unet")
    assert layer_of("pneumo.types") < layer_of("pneumo.io.dicom")
    assert layer_of("pneumo") == 0 and layer_of("pneumo.commands.evaluate_model") == layer_of("pneumo.commands")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("pneumo_other.thing")


def test_layers_document_the_design():
    """The order named in the brief: ensemble above models and below inference; training below inference;
    the integrations (DICOM out, DICOM node, store) above the service and below the front ends."""
    names = [name for name, _ in LAYERS]
    assert names.index("models") < names.index("ensemble") < names.index("inference")
    assert names.index("training") < names.index("inference") < names.index("service")
    assert names.index("service") < names.index("integrations") < names.index("front ends") < names.index("commands")
    doc = (SRC.parent / "docs" / "decisions" / "0006-layers.md").read_text(encoding="utf-8")
    for name, prefixes in LAYERS:
        assert name in doc, f"layer {name!r} is not documented"
