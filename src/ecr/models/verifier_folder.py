"""A verifier folder's checks before and while it loads: complete, readable, consistent, not silently random.

`ecr.models.verifier.load_verifier` runs them in order; each names the folder or `erv.json` field that fails,
because a folder that loads wrong (a random head, τ of NaN, a tokenizer without its vocabulary) would not fail
later: it would read every sentence as one label, i.e. a constant reward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ecr.errors import ConfigError
from ecr.labels import clean_text

META_FILE = "erv.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
PROBE_SENTENCE = "She smiles and her voice is bright."


def read_meta(folder: Path) -> dict[str, Any]:
    """The folder's `erv.json`, checked (`check_meta`); {} for a plain HF folder without one."""
    meta: dict[str, Any] = {}
    if (folder / META_FILE).is_file():
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{folder / META_FILE}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise ConfigError(f"{folder / META_FILE}: expected a JSON object, got {type(meta).__name__}")
        check_meta(meta, folder / META_FILE)
    return meta


def check_meta(meta: Mapping[str, Any], where: Path) -> None:
    """Refuse an `erv.json` whose fields a verifier cannot run with; the error names the file and the field.

    Why: a τ of NaN or 1.5, or zero labels per sentence, loads and then silently turns every sentence into the
    same label set, i.e. a constant reward.
    """
    if "threshold" in meta:
        check_threshold(meta["threshold"], f"{where}: threshold")
    for key, low in (("max_labels", 1), ("max_length", 1)):
        value = meta.get(key)
        if key in meta and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    names = meta.get("label_names")
    if "label_names" in meta and (
        not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names)
    ):
        raise ConfigError(f"{where}: label_names must be a non-empty list of names, got {names!r}")
    if isinstance(names, list) and len({clean_text(n) for n in names}) != len(names):
        raise ConfigError(f"{where}: label_names has duplicates: {names}")
    mapping = meta.get("mapping")
    if mapping is not None and (
        not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    ):
        raise ConfigError(f"{where}: mapping must be {{task label: verifier label}} (strings), got {mapping!r}")
    if isinstance(mapping, dict) and isinstance(names, list):
        unknown = sorted({clean_text(v) for v in mapping.values()} - {clean_text(n) for n in names})
        if unknown:
            raise ConfigError(f"{where}: mapping names verifier labels {unknown} that are not in label_names")


def check_threshold(value: Any, what: str) -> None:
    """τ must be a finite number strictly between 0 and 1 (p > τ decides; 0 or 1 makes every set the same)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{what} must be a number strictly between 0 and 1, got {value!r}")


def check_loading_info(folder: Path, info: Mapping[str, Any]) -> None:
    """Missing or unexpected tensors in a verifier folder are an error: HF would fill a missing head at random."""
    problems = [
        f"{kind.replace('_keys', '')} weights {sorted(map(str, info.get(kind) or ()))[:5]}"
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(kind)
    ]
    if problems:
        raise ConfigError(
            f"verifier folder {str(folder)!r}: its weights do not match its config ({'; '.join(problems)}); "
            "a missing head would be random: re-export the verifier"
        )


def missing_verifier_files(folder: Path) -> list[str]:
    """What a loadable verifier folder lacks, each with where it was expected (empty = complete)."""
    if not folder.is_dir():
        return [f"the folder {folder} does not exist"]
    missing = []
    if not (folder / "config.json").is_file():
        missing.append(f"no config.json at {folder / 'config.json'} (expected a saved verifier or HF model)")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(f"no weights (one of {', '.join(WEIGHT_FILES)}) in {folder}")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append(f"no tokenizer files (one of {', '.join(TOKENIZER_FILES)}) in {folder}")
    return missing


def load_part(folder: Path, part: str, load: Any) -> Any:
    """Run a transformers loader; a corrupt file becomes a ConfigError naming the folder and the part."""
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, SafetensorError) as exc:
        files = [f for f in (WEIGHT_FILES if part == "weights" else TOKENIZER_FILES) if (folder / f).is_file()]
        raise ConfigError(
            f"verifier folder {str(folder)!r}: cannot load its {part} ({', '.join(files)}): "
            f"{type(exc).__name__}: {str(exc)[:200]} (truncated or corrupt file?)"
        ) from exc


def check_tokenizer(folder: Path, tokenizer: Any) -> None:
    """A tokenizer built without its vocabulary maps everything to the unknown token: refuse it."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = tokenizer(PROBE_SENTENCE, add_special_tokens=False)["input_ids"]
    if unk is not None and ids and all(i == unk for i in ids):
        raise ConfigError(
            f"verifier folder {str(folder)!r}: its tokenizer maps {PROBE_SENTENCE!r} to unknown tokens only "
            "(tokenizer files missing or from another model)"
        )
