"""Stage 10: render the application's manifest for one environment.

The rendering itself is :func:`delivery.manifests.render`; this stage validates its input and emits
``ManifestRendered``. Anything malformed is refused, naming the file and the field, before anything
is committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from delivery.events import EventName, emit
from delivery.manifests import ManifestSpec, RenderedManifest, render
from tasks.stage import coerce, stage


@stage("render_manifest")
def render_manifest(spec: ManifestSpec | Mapping[str, Any]) -> RenderedManifest:
    """Render the application's manifest for an environment and emit ``ManifestRendered``.

    Args:
        spec: the templates, the environment's values, the image by digest and the target.

    Returns:
        The objects as deterministic YAML files, one per object.

    Raises:
        InvalidInput: malformed input, template, values or object (file and field named).
    """
    spec = coerce(ManifestSpec, spec, stage_name="render_manifest")
    manifest = render(spec)
    emit(
        EventName.MANIFEST_RENDERED,
        release_id=spec.release_id,
        trace_id=spec.trace_id,
        payload={
            "environment": spec.environment,
            "app": spec.app,
            "image": spec.image,
            "files": list(manifest.files),
            "digest": manifest.digest,
        },
        resource={"delivery.environment": spec.environment},
    )
    return manifest
