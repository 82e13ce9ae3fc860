"""Imports flow one way through the layers docs/architecture.md names (its "The layer order" section).

Every `import`/`from … import` of `ecr` code anywhere under `src/ecr` (module level or inside a function) is
read with `ast`. A module may import its own top-level package (`ecr.data.x` → `ecr.data.y`) and any package
of a LOWER layer; importing a package of the same layer or of a higher one is a back-import and fails,
naming the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "ecr"

# Lowest first. Packages of one layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("lazy", "errors", "quiet", "help_cache"),
    ("labels", "extras"),
    ("prompts", "sentences", "rows", "hub"),
    ("data",),
    ("models",),
    ("teachers",),
    ("rl",),
    ("metrics",),
    ("modules",),
    ("callbacks", "export", "explore", "evaluation"),
    ("fixtures",),
    ("cli", "pipeline", "project"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def top_package(module: str) -> str | None:
    """`ecr.data.decode` → "data"; `ecr` itself or a non-ecr module → None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ecr" and len(parts) > 1 else None


def module_name(path: Path, root: Path = SRC) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from ecr import data` names a package through the alias
            if name == "ecr":
                found += [(node.lineno, f"ecr.{alias.name}") for alias in node.names]
    return found


def violations(root: Path = SRC) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        own = top_package(module_name(path, root))
        if own is None:  # ecr/__init__.py: the version only
            continue
        if own not in RANK:
            out.append(
                f"{path.relative_to(root.parent)}: package {own!r} has no layer "
                "(add it to LAYERS and docs/architecture.md)"
            )
            continue
        for line, target in imported_modules(path, root):
            dep = top_package(target)
            if dep is None or dep == own:
                continue
            if dep not in RANK or RANK[dep] >= RANK[own]:
                out.append(
                    f"{path.relative_to(root.parent)}:{line}: imports {target} "
                    f"({dep!r}, layer {RANK.get(dep, '?')}) from {own!r} (layer {RANK[own]})"
                )
    return out


def test_imports_flow_one_way() -> None:
    bad = violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_every_package_has_a_layer() -> None:
    packages = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if not p.name.startswith(("_", "."))}
    packages = {p for p in packages if (SRC / p).is_dir() or (SRC / f"{p}.py").is_file()} - {"py"}
    assert packages <= set(RANK), f"packages without a layer: {sorted(packages - set(RANK))}"


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("data/bad.py", "from ecr.models.backbone import CollateMode\n"),  # a lower layer reaching up
        ("teachers/bad.py", "def f():\n    from ecr.rl.rewards import format_reward\n"),  # inside a function
        ("callbacks.py", "import ecr.export\n"),  # a sibling of the same layer
        ("labels.py", "from . import prompts\n"),  # relative import
    ],
)
def test_a_back_import_is_reported_with_file_and_line(tmp_path: Path, importer: str, source: str) -> None:
    root = tmp_path / "ecr"
    target = root / importer
    target.parent.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    if target.parent != root:
        (target.parent / "__init__.py").write_text("")
    target.write_text(source)
    bad = violations(root)
    assert len(bad) == 1 and bad[0].startswith(f"ecr/{importer}:"), bad


def test_the_architecture_page_states_the_same_order() -> None:
    page = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    order = " -> ".join(", ".join(layer) for layer in LAYERS)
    assert order in page, f"docs/architecture.md must state the layer order: {order}"
