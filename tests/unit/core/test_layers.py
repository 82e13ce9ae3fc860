"""Imports flow one way through the layers docs/architecture.md names (its "The layer order" section).

Every `import`/`from … import` of `ecr` code anywhere under `src/ecr` (module level or inside a function) is
read with `ast`, and so is every `"ecr.module:function"` string (the command registry of `ecr.cli`, whose
modules are imported only when a command runs): such a string counts as an import of its module, and its
module and function must exist. A module may import its own top-level package (`ecr.data.x` → `ecr.data.y`)
and any package of a LOWER layer; importing a package of the same layer or of a higher one is a back-import
and fails, naming the file, the line and the import. `cli`, the entry point, is the top layer alone: its
registry dispatches to every command, `ecr pipeline` and `ecr init` included.
"""

from __future__ import annotations

import ast
import re
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
    ("pipeline", "project", "lightning_cli"),
    ("cli",),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
TARGET = re.compile(r"ecr(\.\w+)+:\w+")  # "ecr.evaluation.score:score_command"


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


def registered_targets(path: Path) -> list[tuple[int, str]]:
    """(line, "module:function") of every command-registry string in a file (imported when the command runs)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and TARGET.fullmatch(node.value)
    ]


def missing_target(target: str, root: Path = SRC) -> str | None:
    """Why a "module:function" string names nothing (read with `ast`, nothing imported), or None."""
    module, _, function = target.partition(":")
    base = root.parent.joinpath(*module.split("."))
    source = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
    if source is None:
        return f"no module {module}"
    defined = {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
    return None if function in defined else f"{module} defines no function {function}"


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
        where = path.relative_to(root.parent)
        registered = registered_targets(path)
        for line, target in registered:
            why = missing_target(target, root)
            if why is not None:
                out.append(f"{where}:{line}: registers {target}, but there is {why}")
        entry = {(line, target.partition(":")[0]) for line, target in registered}
        for line, target in imported_modules(path, root) + sorted(entry):
            dep = top_package(target)
            if dep is None or dep == own:
                continue
            if dep not in RANK or RANK[dep] >= RANK[own]:
                out.append(
                    f"{where}:{line}: imports {target} "
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
        ("cli.py", 'COMMANDS = {"x": "ecr.cli:nothing"}\n'),  # a registry string naming no function
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


def test_registered_commands_are_imports(tmp_path: Path) -> None:
    """The `ecr` command registry is seen: a registry string in a lower layer naming a higher one is reported."""
    assert ("ecr.evaluation.score:score_command") in {t for _, t in registered_targets(SRC / "cli.py")}
    root = tmp_path / "ecr"
    for folder in (root, root / "data", root / "models"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    (root / "models" / "info.py").write_text("def info_command():\n    pass\n")
    (root / "data" / "bad.py").write_text('COMMANDS = {"info": "ecr.models.info:info_command"}\n')
    assert violations(root) == ["ecr/data/bad.py:1: imports ecr.models.info ('models', layer 4) from 'data' (layer 3)"]


def test_the_architecture_page_states_the_same_order() -> None:
    page = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    order = " -> ".join(", ".join(layer) for layer in LAYERS)
    assert order in page, f"docs/architecture.md must state the layer order: {order}"
