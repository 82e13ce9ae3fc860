"""Data: manifests, synchronized A/V decoding, the ClipDataModule."""
