"""Data: manifests, synchronized A/V decoding, the DataModules (clips, text rows, verifier sentences), checks.

Exports load lazily, so reading a manifest or printing a help text does not import Lightning.
"""

from ecr.lazy import lazy_exports

_EXPORTS = {
    "ClipCache": "cache",
    "ClipDataModule": "datamodule",
    "SplitDataModule": "datamodule",
    "assign_splits": "splits",
    "ClipDataset": "dataset",
    "default_collate": "dataset",
    "ResumableDataLoader": "loader",
    "decode_clip": "decode",
    "read_custom_manifest": "manifests",
    "read_dataset": "manifests",
    "read_dfew": "release_readers",
    "read_emer": "release_readers",
    "read_mafw": "release_readers",
    "read_mafw_xlsx": "release_readers",
    "read_mafw_multi_xlsx": "release_readers",
    "EpochSampler": "sampler",
    "SentenceDataModule": "sentences",
    "TextDataModule": "text",
    "TextRecord": "text",
    "TextSample": "text",
    "read_text_manifest": "text",
    "ClipFailure": "types",
    "ClipRecord": "types",
    "ClipSample": "types",
    "DecodedClip": "types",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
