"""Installation promises (docs/install.md): pyproject.toml's ranges hold the lock and the lower-bound set,
every extra's package is imported only through `ecr.extras`, and a missing extra is one line + exit 2 from the CLI.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ecr.extras import EXTRAS, MissingExtraError, require, require_version, version_tuple

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src" / "ecr"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements/constraints file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: not an exact pin: {line!r}"
            out[canonicalize_name(name)] = version
    return out


def pins_or_names(path: Path) -> dict[str, str]:
    """name -> version ("" when unpinned) of a requirements file."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return {canonicalize_name(x.split("==")[0]): x.partition("==")[2] for x in lines if x}


def declared(groups: tuple[str, ...] = ()) -> list[Requirement]:
    """Core requirements plus those of the optional `groups` (self-references like ecr[...] dropped)."""
    reqs = [*PROJECT["dependencies"], *(r for g in groups for r in PROJECT["optional-dependencies"][g])]
    return [r for r in map(Requirement, reqs) if canonicalize_name(r.name) != "ecr"]


ALL_GROUPS = tuple(PROJECT["optional-dependencies"])
TOOLS = ("dev", "docs")  # tool extras (tests, the documentation site): nothing under src/ imports them


@pytest.mark.parametrize("name", ["lock.txt", "lower.txt"])
def test_every_pinned_version_lies_inside_its_declared_range(name: str) -> None:
    locked = pins(REPO / "requirements" / name)
    missing = [str(r) for r in declared(ALL_GROUPS) if canonicalize_name(r.name) not in locked]
    outside = [
        f"{r.name}=={locked[canonicalize_name(r.name)]} not in {r.specifier}"
        for r in declared(ALL_GROUPS)
        if canonicalize_name(r.name) in locked and not r.specifier.contains(locked[canonicalize_name(r.name)], True)
    ]
    assert not missing, f"requirements/{name} pins no version of: {missing}"
    assert not outside, f"requirements/{name} vs pyproject.toml: {outside}"


def test_the_lower_bound_set_is_the_lower_bound_of_every_range() -> None:
    lower = pins(REPO / "requirements" / "lower.txt")
    dev = {canonicalize_name(r.name) for r in declared(TOOLS)} - {canonicalize_name(r.name) for r in declared()}
    wrong = []
    for r in declared(tuple(g for g in ALL_GROUPS if g not in TOOLS)):
        floor = [s.version for s in r.specifier if s.operator == ">="]
        assert floor, f"pyproject.toml: {r} declares no lower bound"
        if canonicalize_name(r.name) not in dev and lower[canonicalize_name(r.name)] != floor[0]:
            wrong.append(f"{r.name}: lower.txt {lower[canonicalize_name(r.name)]}, range starts at {floor[0]}")
    assert not wrong, wrong


def test_the_gpu_image_stack_is_inside_the_ranges_but_transformers() -> None:
    """The lent GPU machines' image (requirements/gpu_image.txt) satisfies the core ranges except transformers
    (5.17 predates the Qwen2.5-Omni layout ecr uses: scripts/gpu_wheelhouse.sh carries the lock's)."""
    image = pins_or_names(REPO / "requirements" / "gpu_image.txt")
    core = {canonicalize_name(r.name): r for r in declared()}
    outside = {n for n, v in image.items() if v and n in core and not core[n].specifier.contains(v)}
    assert outside == {"transformers"}, {n: (image[n], str(core[n].specifier)) for n in outside}
    assert image["torch"] == "2.11.0" and core["torch"].specifier.contains("2.11.0+cu130")


def test_the_extras_map_matches_pyproject() -> None:
    groups = PROJECT["optional-dependencies"]
    for module, (dist, extra) in EXTRAS.items():
        names = {canonicalize_name(Requirement(r).name) for r in groups[extra]}
        assert canonicalize_name(dist) in names, f"ecr.extras: {module} -> ecr[{extra}], which lacks {dist}"
    optional = [r for g, rs in groups.items() if g not in (*TOOLS, "all") for r in rs]
    everything = {canonicalize_name(Requirement(r).name) for r in optional}
    assert everything == {canonicalize_name(d) for d, _ in EXTRAS.values()}
    assert set(groups) - {*TOOLS, "all"} <= set(re.findall(r"[\w-]+", groups["all"][0].split("[", 1)[1]))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def test_extra_packages_are_imported_only_through_ecr_extras() -> None:
    """A plain `import openai` somewhere would turn a missing extra back into a traceback."""
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = {  # `if TYPE_CHECKING:` imports never run
            id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
            for stmt in block.body for n in ast.walk(stmt)
        }  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            hits += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] in EXTRAS]
    assert not hits, f"import these through ecr.extras.require: {hits}"


def test_require_names_the_extra_and_keeps_other_import_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pysbd", None)  # an import of it now fails as if absent
    with pytest.raises(MissingExtraError, match=r"splitter needs pysbd, which is not installed: pip install 'ecr\[t"):
        require("pysbd", "the splitter")
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")] + ["timm", "timm.layers"]:
        monkeypatch.setitem(sys.modules, name, None)  # also when an earlier test imported timm already
    with pytest.raises(MissingExtraError, match=r"ecr\[humanomni\]"):
        require("timm.layers", "HumanOmni")
    assert require("json", "anything") is json


def test_require_version_refuses_an_older_package() -> None:
    assert version_tuple("2.11.0+cu130") == (2, 11, 0) and version_tuple("1.0rc1") == (1, 0)
    require_version("pytest", "1.0", "tests")  # installed and new enough: no error
    require_version("not-a-package-ecr", "9", "x")  # absent: no opinion (require() reports absence)
    with pytest.raises(MissingExtraError, match=r"feature X needs pytest>=999\.0, but pytest .* is installed"):
        require_version("pytest", "999.0", "feature X")


BLOCK = "import sys; sys.modules.update(dict.fromkeys(sys.argv[1].split(','))); del sys.argv[1]; " \
        "sys.argv[0] = 'ecr'; from ecr.cli import main; main()"  # fmt: skip


def run_without(modules: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`ecr ARGS` in a fresh process in which `modules` (comma-separated) cannot be imported."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", BLOCK, modules, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_missing_extra_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "explanations.jsonl"
    src.write_text(json.dumps({"id": "a", "explanation": "He smiles. She weeps.", "split": "train"}) + "\n")
    res = run_without("nrclex", ["label", "--input", str(src), "--output", str(tmp_path / "o.jsonl")], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "pip install 'ecr[text]'" in err[0] and "Traceback" not in res.stderr, res.stderr


def test_deepspeed_strategies_are_recognised_in_every_config_form() -> None:
    from lightning.pytorch.strategies import DDPStrategy

    from ecr.cli import strategy_needs_deepspeed

    yes = ["deepspeed_stage_2", {"class_path": "lightning.pytorch.strategies.DeepSpeedStrategy"}]
    no = [None, "auto", "ddp", {"class_path": "lightning.pytorch.strategies.DDPStrategy"}, DDPStrategy()]
    assert all(map(strategy_needs_deepspeed, yes)) and not any(map(strategy_needs_deepspeed, no))


@pytest.mark.slow  # a LightningCLI parse of two configs in a fresh process: ~30 s on 2 cores
def test_cli_deepspeed_strategy_without_deepspeed_names_the_extra(tmp_path: Path) -> None:
    configs = [REPO / "configs/demo/sft.yaml", REPO / "configs/deepspeed/zero2.yaml"]
    args = ["fit", *(a for c in configs for a in ("--config", str(c)))]
    res = run_without("deepspeed", args, tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: MissingExtraError: trainer.strategy (DeepSpeed) needs deepspeed" in res.stderr
    assert "pip install 'ecr[deepspeed]'" in res.stderr
    assert "Traceback" not in res.stderr, res.stderr[-2000:]


def test_a_backbone_refuses_an_older_transformers_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `--no-deps` installation (a GPU image with transformers 5.17) is refused before any weights load."""
    import importlib.metadata

    from ecr.models import PolicyConfig, build_backbone

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "5.17.0" if d == "transformers" else real(d))
    backbone = build_backbone(PolicyConfig(model="/nonexistent/qwen2.5-omni"))
    with pytest.raises(MissingExtraError, match=r"qwen2_5_omni backbone .* needs transformers>=5\.23\.0, but "
                       r"transformers 5\.17\.0 is installed"):  # fmt: skip
        backbone.load()
