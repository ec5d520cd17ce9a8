"""A manifest as GitOps files: one deterministic YAML file per Kubernetes object, in apply order."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import yaml

from delivery.errors import InvalidInput
from delivery.objects import apply_order


def file_name(obj: Mapping[str, Any]) -> str:
    """The GitOps file of an object: ``<kind>-<name>.yaml``."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def dump_object(obj: Mapping[str, Any]) -> str:
    """Serialise an object deterministically (sorted keys, block style)."""
    return yaml.safe_dump(dict(obj), sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096)


def files_for(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Turn objects into GitOps files in apply order."""
    return {file_name(obj): dump_object(obj) for obj in sorted(objects, key=apply_order)}


def files_digest(files: Mapping[str, str | bytes]) -> str:
    """sha256 over the files' names and contents, in name order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(name.encode() + b"\0" + (content.encode() if isinstance(content, str) else content) + b"\0")
    return digest.hexdigest()


def parse_objects(files: Mapping[str, str | bytes]) -> list[dict[str, Any]]:
    """Parse GitOps files back into objects, in apply order.

    Raises:
        InvalidInput: a file is not YAML or holds something that is not an object.
    """
    # libyaml when present: drift checks parse every file of an environment on each run.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    objects: list[dict[str, Any]] = []
    for name in sorted(files):
        if not name.endswith((".yaml", ".yml")):
            continue
        try:
            documents = list(yaml.load_all(files[name], Loader=loader))
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{name}: not valid YAML: {exc}") from None
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, dict) or "kind" not in document or "metadata" not in document:
                raise InvalidInput(f"{name}: holds something that is not a Kubernetes object")
            objects.append(document)
    return sorted(objects, key=apply_order)
