"""Rendering an application's manifest: ``deploy/*.yaml.j2`` templates and values become objects.

The templates, with ``deploy/values.yaml`` as defaults and the environment's values on top, become
Kubernetes objects that pin the image by digest, carry the managed labels and the release/trace
annotations, and serialise to the same bytes every time (:mod:`delivery.manifest_files`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import yaml
from pydantic import Field, field_validator

from delivery.errors import InvalidInput
from delivery.labels import (
    APP_LABEL,
    ENVIRONMENT_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RELEASE_ID_ANNOTATION,
    TRACE_ID_ANNOTATION,
)
from delivery.manifest_checks import DIGEST_REFERENCE, check_object, object_problem
from delivery.manifest_files import files_digest, files_for, parse_objects
from delivery.models import Model
from delivery.objects import CLUSTER_SCOPED_KINDS

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$"
TEMPLATE_SUFFIX = ".yaml.j2"
DEPLOY_FOLDER = "deploy"
VALUES_FILE = "values.yaml"
# Rendering has always stamped the environment's namespace on a PriorityClass (and refused another
# one); leaving it out now would change the rendered bytes and digest of such a release.
_UNNAMESPACED_WHEN_RENDERED = CLUSTER_SCOPED_KINDS - {"PriorityClass"}


class DeployTarget(Model):
    """Who deploys what where: the ids every per-environment stage carries (and is keyed on)."""

    release_id: str = Field(min_length=1)
    trace_id: str = Field(min_length=1)
    revision: int = Field(default=1, ge=1, description="The release's revision, not a Git commit")
    app: str = Field(pattern=NAME_PATTERN)
    environment: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    namespace: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

    def target(self) -> DeployTarget:
        """Just the target part of a larger model."""
        return DeployTarget(**{name: getattr(self, name) for name in DeployTarget.model_fields})


class ManifestSpec(DeployTarget):
    """What :func:`render` renders (the input of the ``render_manifest`` stage)."""

    image: str = Field(description="The image pinned by digest: repository@sha256:<64 hex>")
    templates: dict[str, str] = Field(description="deploy/ file name -> text: *.yaml.j2 and values.yaml")
    values: dict[str, Any] = Field(default_factory=dict, description="The environment's values")
    source: str = Field(default=DEPLOY_FOLDER, description="Folder the templates came from, for messages")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not DIGEST_REFERENCE.fullmatch(value):
            raise ValueError(f"{value!r} is not pinned by digest (expected repository@sha256:<64 hex>)")
        return value

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        if not any(name.endswith(TEMPLATE_SUFFIX) for name in value):
            raise ValueError(f"no *{TEMPLATE_SUFFIX} template given")
        for name in value:
            if "/" in name or name.startswith("."):
                raise ValueError(f"template name {name!r} must be a plain file name")
        return value


class RenderedManifest(DeployTarget):
    """The rendered objects of one environment, one YAML file per object."""

    image: str
    files: dict[str, str] = Field(description="file name -> YAML text, in apply order")
    digest: str = Field(description="sha256 over the files' names and bytes")

    def objects(self) -> list[dict[str, Any]]:
        """The objects, in apply order."""
        return parse_objects(self.files)


# --------------------------------------------------------------------------- templates and values


def _is_deploy_file(name: str) -> bool:
    return name.endswith(TEMPLATE_SUFFIX) or name == VALUES_FILE


def templates_from_dir(path: str | Path) -> dict[str, str]:
    """Read a ``deploy/`` folder: its ``*.yaml.j2`` templates and ``values.yaml``.

    Args:
        path: the folder.

    Returns:
        file name -> text.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidInput(f"templates folder {folder} does not exist")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir())
        if entry.is_file() and _is_deploy_file(entry.name)
    }


def templates_from_files(files: Mapping[str, bytes], *, folder: str = DEPLOY_FOLDER) -> dict[str, str]:
    """The templates and ``values.yaml`` directly in ``folder``, from repository files (a git tree).

    Args:
        files: repository path -> bytes (other paths are ignored).
        folder: the templates' folder in the repository.

    Returns:
        file name -> text; other files of the folder (a README, a ``.gitkeep``) are left out, as
        :func:`templates_from_dir` leaves them out.

    Raises:
        InvalidInput: a template or ``values.yaml`` is not UTF-8 text (the file named).
    """
    templates = {}
    for path, data in sorted(files.items()):
        where, _, name = path.rpartition("/")
        if where != folder or not _is_deploy_file(name):
            continue
        try:
            templates[name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return templates


class _Values(dict):
    """A values mapping that remembers its path, so a missing key is reported as ``values.a.b``."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        super().__init__({key: _wrap(item, f"{path}.{key}") for key, item in data.items()})
        self.path = path


def _wrap(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        return _Values(value, path)
    if isinstance(value, list):
        return [_wrap(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


class _NamedUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose message names the full path of the missing value."""

    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if isinstance(owner, _Values):
            return f"{owner.path}.{self._undefined_name} is not defined"
        if owner is jinja2.utils.missing:
            return f"{self._undefined_name} is not defined"
        return super()._undefined_message


def merge_values(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` onto ``defaults``: mappings merge, anything else replaces."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_values(templates: Mapping[str, str], *, source: str = DEPLOY_FOLDER) -> dict[str, Any]:
    """The defaults of ``values.yaml`` among the templates (empty when there is none).

    Raises:
        InvalidInput: ``values.yaml`` is not YAML or not a mapping (the file and line named).
    """
    text = templates.get(VALUES_FILE)
    where = f"{source}/{VALUES_FILE}"
    if text is None:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: must be a mapping of values, got {type(data).__name__}")
    return data


def _template_line(exc: BaseException, filename: str) -> str:
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" line {line}" if line else ""


def template_environment(templates: Mapping[str, str], displays: Mapping[str, str]) -> jinja2.Environment:
    """The sandboxed Jinja environment templates are compiled and rendered in.

    Sandboxed: templates come from the application repository, where artifacts write; a template
    reaching Python internals (``''.__class__...``, ``self.__init__.__globals__``) is refused, not run.

    Args:
        templates: file name -> template text.
        displays: file name -> how messages name the file (its ``filename`` in tracebacks too).
    """
    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FunctionLoader(lambda name: (templates[name], displays[name], lambda: True)),
        undefined=_NamedUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _syntax_error(exc: jinja2.TemplateSyntaxError, display: str) -> InvalidInput:
    return InvalidInput(f"{display} line {exc.lineno}: template syntax error: {exc.message}")


def check_templates(templates: Mapping[str, str], *, source: str = DEPLOY_FOLDER) -> None:
    """Check what can be checked of templates before there is an image to render them with.

    At least one ``*.yaml.j2``, ``values.yaml`` a mapping, and every template compiling in the
    sandboxed environment :func:`render` uses (syntax errors). Values and objects are checked when
    rendering, which stays the authority: a missing value may sit in a branch never taken.

    Args:
        templates: file name -> text, as :func:`templates_from_files` gives them.
        source: how messages name the folder, e.g. ``sample-app:deploy``.

    Raises:
        InvalidInput: naming the file (and its line).
    """
    names = sorted(name for name in templates if name.endswith(TEMPLATE_SUFFIX))
    if not names:
        raise InvalidInput(f"{source}: no *{TEMPLATE_SUFFIX} template")
    default_values(templates, source=source)
    displays = {name: f"{source}/{name}" for name in templates}
    env = template_environment(templates, displays)
    for name in names:
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(exc, displays[name]) from None


def _render_file(env: jinja2.Environment, name: str, display: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax_error(exc, display) from None
    except jinja2.UndefinedError as exc:
        raise InvalidInput(f"{display}{_template_line(exc, display)}: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside a template is the template's fault
        raise InvalidInput(f"{display}{_template_line(exc, display)}: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- rendering


def render(spec: ManifestSpec) -> RenderedManifest:
    """Render a manifest (the pure part of :func:`render_manifest`).

    Args:
        spec: templates, values, image and target.

    Returns:
        The rendered manifest.

    Raises:
        InvalidInput: a template, the values or a rendered object is malformed; the message names
            the file and the field.
    """
    values = merge_values(default_values(spec.templates, source=spec.source), spec.values)
    displays = {name: f"{spec.source}/{name}" for name in spec.templates}
    env = template_environment(spec.templates, displays)
    context = {
        "app": spec.app,
        "environment": spec.environment,
        "namespace": spec.namespace,
        "image": spec.image,
        "values": _Values(values, "values"),
    }
    objects: list[dict[str, Any]] = []
    origin: dict[tuple[str, str], str] = {}
    for name in sorted(spec.templates):
        if not name.endswith(TEMPLATE_SUFFIX):
            continue
        display = displays[name]
        text = _render_file(env, name, display, context)
        try:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" (rendered) line {mark.line + 1}" if mark is not None else ""
            raise InvalidInput(f"{display}{line}: rendered text is not valid YAML: {exc}") from None
        for document in documents:
            check_object(display, document)
            key = (document["kind"], document["metadata"]["name"])
            if key in origin:
                raise object_problem(display, document, "metadata.name", f"is also rendered by {origin[key]}")
            origin[key] = display
            objects.append(_label(document, spec, display))
    files = files_for(objects)
    return RenderedManifest(
        **spec.target().model_dump(), image=spec.image, files=files, digest=files_digest(files)
    )


def _label(obj: dict[str, Any], spec: ManifestSpec, display: str) -> dict[str, Any]:
    metadata = obj["metadata"]
    if obj["kind"] not in _UNNAMESPACED_WHEN_RENDERED:
        declared = metadata.get("namespace")
        if declared not in (None, spec.namespace):
            raise object_problem(display, obj, "metadata.namespace", f"is {declared!r}, outside the environment's "
                        f"namespace {spec.namespace!r}")
        metadata["namespace"] = spec.namespace
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        APP_LABEL: spec.app,
        ENVIRONMENT_LABEL: spec.environment,
    }
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        RELEASE_ID_ANNOTATION: spec.release_id,
        TRACE_ID_ANNOTATION: spec.trace_id,
    }
    return obj
