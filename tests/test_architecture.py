"""The package order of docs/architecture.md: no module imports a package to its right."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TOP_LEVEL = ("schemas", "storage", "audio_models", "transforms", "beam_jobs")

# Left to right: each may import only those before it (and itself).
ORDER = ("schemas", "storage", "audio_models", "transforms.decoding", "transforms.output",
         "transforms.answers", "transforms.tagging", "transforms.training", "beam_jobs")


def _rank(module: str) -> int | None:
    matches = [i for i, package in enumerate(ORDER) if module == package or module.startswith(package + ".")]
    return max(matches) if matches else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_package_imports_one_to_its_right():
    wrong = []
    for package in TOP_LEVEL:
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if module == "transforms.__init__":
                continue  # the package's own docstring
            own = _rank(module)
            assert own is not None, f"{module} is in no package of the order"
            for name in _imports(path):
                other = _rank(name)
                if other is not None and other > own:
                    wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_schemas_import_nothing_of_the_product():
    for path in sorted((REPO / "schemas").rglob("*.py")):
        product = [n for n in _imports(path) if _rank(n) is not None and not n.startswith("schemas")]
        assert not product, f"{path.name} imports {product}"


def _top_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package: set() for package in TOP_LEVEL}
    for package in TOP_LEVEL:
        for path in sorted((REPO / package).rglob("*.py")):
            for name in _imports(path):
                top = name.split(".", 1)[0]
                if top in graph and top != package:
                    graph[package].add(top)
    return graph


def test_no_cycle_between_top_level_packages():
    graph = _top_level_graph()
    seen, on_path, cycles = set(), [], []

    def visit(package):
        if package in on_path:
            cycles.append(" -> ".join([*on_path[on_path.index(package):], package]))
            return
        if package in seen:
            return
        seen.add(package)
        on_path.append(package)
        for other in sorted(graph[package]):
            visit(other)
        on_path.pop()

    for package in TOP_LEVEL:
        visit(package)
    assert not cycles, "\n".join(cycles)


def test_ground_floor_imports_nothing_above_it():
    graph = _top_level_graph()
    assert graph["schemas"] == set()
    assert graph["storage"] == set()
