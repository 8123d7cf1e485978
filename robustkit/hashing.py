"""File digests recorded in provenance and model cards."""

from __future__ import annotations

import hashlib
import json
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(data: object) -> str:
    """Hex SHA-256 of ``data`` as canonical JSON (sorted keys, no spaces): e.g. a card's config,
    so that two configs that differ in any value have different digests."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
