"""`ecr model check`: does a downloaded checkpoint hold the tensors its family's model expects?

Reads only the safetensors headers (the 8-byte length + JSON at the start of each file; no tensor data), of a
single file, several files or a sharded folder (`model.safetensors.index.json`). The expected layout is the
state dict of the family's model built on the meta device from the folder's own `config.json`
(`ecr.models.info`), without the tied aliases `save_pretrained` leaves out. Checkpoint names go through
transformers' own loading renames (e.g. a full Omni release's `thinker.model.layers.*` → the thinker's
`model.language_model.layers.*`), so a key is reported exactly when transformers would not place it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ecr.errors import ConfigError
from ecr.models.skeleton import build_skeleton, model_source
from ecr.rows import markdown_table

INDEX = "model.safetensors.index.json"
# Families whose checkpoints may hold other sub-models' tensors that loading the policy skips on purpose.
IGNORED_PREFIXES: dict[str, tuple[str, ...]] = {"qwen2_5_omni": ("talker.", "token2wav.")}


def ignored_prefixes(family: str) -> tuple[str, ...]:
    """Stored tensors the family's loader skips on purpose (HumanOmni: its own list, e.g. the unused compressor)."""
    if family == "humanomni":
        from ecr.models.humanomni.loading import IGNORED_PREFIXES as HUMANOMNI_IGNORED

        return tuple(HUMANOMNI_IGNORED)
    return IGNORED_PREFIXES.get(family, ())


_MAX_HEADER = 100 * 2**20  # safetensors refuses headers over 100 MB too


def read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from one safetensors file's header (no tensor data is read)."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConfigError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (size,) = struct.unpack("<Q", raw)
            if size > _MAX_HEADER:
                raise ConfigError(f"{path}: not a safetensors file (header length {size} bytes)")
            header = json.loads(f.read(size))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: safetensors header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: safetensors header is not a JSON object")
    return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}


def checkpoint_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape over a checkpoint folder (sharded with an index, or all its `*.safetensors`)."""
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map: Mapping[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{index}: not a safetensors index (needs a 'weight_map' object): {err}") from err
        shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise ConfigError(f"{index}: shard {shard!r} is missing from {folder}")
            shapes.update(read_header(folder / shard))
        absent = sorted(set(weight_map) - set(shapes))
        if absent:
            raise ConfigError(f"{index}: {len(absent)} indexed tensors are not in their shards, e.g. {absent[0]!r}")
        return shapes
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder}: no *.safetensors files (and no {INDEX})")
    shapes = {}
    for f in files:
        shapes.update(read_header(f))
    return shapes


def expected_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """State-dict name → shape of `model`, each tensor once (tied aliases dropped, as `save_pretrained` does)."""
    seen: set[int] = set()
    shapes = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        shapes[name] = tuple(tensor.shape)
    return shapes


def loading_renamer(model: Any, expected: Mapping[str, tuple[int, ...]]) -> Callable[[str], str]:
    """Checkpoint key → model key, by transformers' own loading renames for `model` (identity without them)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # pragma: no cover - older transformers: keys are used as stored
        return lambda key: key
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    # every transform that is not a plain renaming converts (transformers has the two kinds)
    converters = cast(list[WeightConverter], [t for t in transforms if not isinstance(t, WeightRenaming)])
    prefix = getattr(model, "base_model_prefix", None)
    meta = dict(expected)

    def rename(key: str) -> str:
        return rename_source_key(key, renamings, converters, base_model_prefix=prefix, meta_state_dict=meta)[0]

    return rename


@dataclass
class LayoutDiff:
    """How a checkpoint's tensors differ from the expected layout (names as the model names them)."""

    expected: int
    found: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshapen: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, want, got
    ignored: list[str] = field(default_factory=list)  # other sub-models' tensors (e.g. the Omni talker)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen)


def compare_layout(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    rename: Callable[[str], str] = lambda key: key,
    ignored_prefixes: tuple[str, ...] = (),
) -> LayoutDiff:
    """Missing, unexpected and misshapen tensors of `found` (checkpoint names) against `expected` (model names)."""
    diff = LayoutDiff(expected=len(expected), found=len(found))
    renamed: dict[str, tuple[int, ...]] = {}
    for key, shape in found.items():
        if key.startswith(ignored_prefixes):
            diff.ignored.append(key)
            continue
        name = rename(key)
        if name.startswith(ignored_prefixes):
            diff.ignored.append(key)
            continue
        renamed[name] = shape
    diff.missing = sorted(set(expected) - set(renamed))
    diff.unexpected = sorted(set(renamed) - set(expected))
    diff.misshapen = sorted(
        (name, expected[name], renamed[name])
        for name in set(expected) & set(renamed)
        if expected[name] != renamed[name]
    )
    diff.ignored.sort()
    return diff


def check_layout(path: str | Path) -> tuple[str, LayoutDiff]:
    """(family, diff) of the checkpoint folder `path` against its family's expected layout."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder (expected a downloaded model folder with config.json)")
    source = model_source(str(folder))
    model = build_skeleton(source)
    expected = expected_shapes(model)
    found = checkpoint_shapes(folder)
    diff = compare_layout(expected, found, loading_renamer(model, expected), ignored_prefixes(source.family))
    return source.family, diff


def format_diff(path: str | Path, family: str, diff: LayoutDiff, show: int = 20) -> str:
    """The text `ecr model check` prints: counts, then the first `show` names of each kind."""
    status = "matches" if diff.ok else "DIFFERS from"
    lines = [
        f"{path}: {diff.found} tensors; {status} the {family} layout ({diff.expected} tensors expected)",
        "",
        markdown_table(
            ["kind", "tensors"],
            [
                ("missing", len(diff.missing)),
                ("unexpected", len(diff.unexpected)),
                ("misshapen", len(diff.misshapen)),
                ("ignored (other sub-models)", len(diff.ignored)),
            ],
            align=True,
        ),
    ]
    sections = [
        ("missing (expected, not in the checkpoint)", diff.missing),
        ("unexpected (in the checkpoint, not expected)", diff.unexpected),
        (
            "misshapen (expected shape -> checkpoint shape)",
            [f"{n}: {list(a)} -> {list(b)}" for n, a, b in diff.misshapen],
        ),
    ]
    for title, names in sections:
        if names:
            lines += ["", f"{title}:", *(f"  {n}" for n in names[:show])]
            if len(names) > show:
                lines.append(f"  ... and {len(names) - show} more")
    return "\n".join(lines)


def check_command(path: Path, show: int = 20) -> int:
    """Compare a downloaded checkpoint's tensor names and shapes with its family's layout (headers only).

    Exits 0 when they agree, 1 when tensors are missing, unexpected or misshapen (each listed).

    Args:
        path: Model folder with config.json and safetensors files (single, several, or sharded with an index).
        show: How many names of each kind (missing, unexpected, misshapen) to print.
    """
    family, diff = check_layout(path)
    print(format_diff(path, family, diff, show))
    return 0 if diff.ok else 1
