"""Hypothesis strategies of the security suite: mostly valid inputs with exactly one field broken.

Each broken document comes with the field path the refusal must name (``artifacts.0.path``,
``environments.staging.approval.min_approvers``, ``deploy/x.yaml.j2``, ...). The bases are the
product's own examples: the sample app's release request, examples/gitops/delivery.yaml,
examples/sample-app/delivery-build.yaml and examples/sample-app/deploy/; and for the approval inputs,
an approval statement signed by a fixed key (the signed text, and what a person pastes).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from delivery import sshsig
from delivery.identity import NAMESPACE, Registry, SignedStatement, Statement, registry_line
from delivery.models import Decision

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = ROOT / "examples" / "sample-app"
GITOPS_CONFIG = (ROOT / "examples" / "gitops" / "delivery.yaml").read_text()
BUILD_SETTINGS = (SAMPLE_APP / "delivery-build.yaml").read_text()
DEPLOY = SAMPLE_APP / "deploy"
DIGEST_IMAGE = "registry.local/sample-app@sha256:" + "ab" * 32

Path_ = tuple[str | int, ...]

# Deterministic (the same examples on every run and machine), no example database written to the
# work tree, no per-example deadline (the first example pays for imports); counts are per test.
settings.register_profile(
    "security",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
SECURITY = settings.get_profile("security")


@dataclass(frozen=True)
class Broken:
    """A document with one thing broken, and the field path the refusal must name."""

    document: Any
    field: str
    what: str

    def __repr__(self) -> str:  # hypothesis prints it on failure
        return f"Broken({self.what} at {self.field!r}: {self.document!r})"


# --------------------------------------------------------------------------- field paths in messages


def names_field(message: str, field: str) -> bool:
    """Tell whether ``message`` names ``field`` (a dotted path).

    A discriminated union (the strategy) puts its tag in pydantic's location
    (``strategy.canary.steps``): the tag is allowed after ``strategy``.
    """
    if not field:
        return True
    parts = [re.escape(part) for part in field.split(".")]
    pattern = ""
    for index, part in enumerate(parts):
        pattern += (r"\." if index else "") + part
        if part == "strategy" and index < len(parts) - 1:
            pattern += r"(?:\.(?:rolling|blue_green|canary))?"
    return re.search(rf"(?<![\w.-]){pattern}(?![\w-])", message) is not None


def names_request_field(message: str, field: str) -> bool:
    """``names_field`` for a refusal of the flow's ``request`` parameter: ``request.<field>``, or the field
    named in the message of a check across fields (duplicates), which pydantic locates at ``request``."""
    return names_field(message, f"request.{field}") or names_field(message.replace(" - request: ", " - "), field)


def dotted(path: Path_) -> str:
    return ".".join(str(part) for part in path)


# --------------------------------------------------------------------------- generic tree mutations


def nodes(document: Any, *, skip: Callable[[Path_], bool], prefix: Path_ = ()) -> list[Path_]:
    """Every path below ``document`` (not the root), leaving out the subtrees ``skip`` names."""
    found: list[Path_] = []
    items: list[tuple[str | int, Any]] = []
    if isinstance(document, dict):
        items = list(document.items())
    elif isinstance(document, list):
        items = list(enumerate(document))
    for key, value in items:
        path = (*prefix, key)
        if skip(path):
            continue
        found.append(path)
        found.extend(nodes(value, skip=skip, prefix=path))
    return found


def get_in(document: Any, path: Path_) -> Any:
    for part in path:
        document = document[part]
    return document


def replaced(document: Any, path: Path_, value: Any) -> Any:
    copied = copy.deepcopy(document)
    get_in(copied, path[:-1])[path[-1]] = value
    return copied


def deleted(document: Any, path: Path_) -> Any:
    copied = copy.deepcopy(document)
    del get_in(copied, path[:-1])[path[-1]]
    return copied


def wrong_type_for(value: Any) -> st.SearchStrategy[Any]:
    """A value of a kind no field of that kind accepts (no lax coercion reaches it)."""
    if isinstance(value, dict):
        return st.sampled_from([[1], 7, ["a", "b"]])
    if isinstance(value, list):
        return st.sampled_from([{"zz": 1}, 7, {}])
    return st.sampled_from([[1], {"zz": 1}, [], {"a": [1, 2]}])


UNKNOWN_KEY = st.from_regex(r"\Azz_[a-z]{1,8}\Z")


def generic_breaks(base: Any, *, skip: Callable[[Path_], bool], models: Callable[[Path_], bool],
                   required: list[Path_]) -> st.SearchStrategy[Broken]:
    """Wrong type at any node, an unknown key in any model mapping, a required key left out."""
    all_nodes = nodes(base, skip=skip)
    model_paths = [()] + [p for p in all_nodes if isinstance(get_in(base, p), dict) and models(p)]

    @st.composite
    def wrong_type(draw: st.DrawFn) -> Broken:
        path = draw(st.sampled_from(all_nodes))
        value = draw(wrong_type_for(get_in(base, path)))
        # A strategy's name is its union's tag: pydantic locates a bad tag at the strategy itself.
        field = dotted(path[:-1] if path[-2:-1] == ("strategy",) and path[-1] == "name" else path)
        return Broken(replaced(base, path, value), field, "wrong type")

    @st.composite
    def unknown_key(draw: st.DrawFn) -> Broken:
        path = draw(st.sampled_from(model_paths))
        key = draw(UNKNOWN_KEY)
        copied = copy.deepcopy(base)
        get_in(copied, path)[key] = draw(st.sampled_from([1, "x", None, [1]]))
        return Broken(copied, dotted((*path, key)), "unknown field")

    @st.composite
    def missing(draw: st.DrawFn) -> Broken:
        path = draw(st.sampled_from(required))
        return Broken(deleted(base, path), dotted(path), "required field left out")

    return st.one_of(wrong_type(), unknown_key(), missing())


# --------------------------------------------------------------------------- bad values shared by the documents


ESCAPING_PATHS = st.sampled_from(["../x", "a/../../b", "/etc/passwd", "/abs/file.py", "..", "a\\b", "a\x00b",
                                  ".git/config", "src/.git/hooks/pre-commit", "", "./a", "a//b", "a/."])
CHECKOUT_ESCAPES = st.sampled_from(["../x", "a/../../b", "/etc/passwd", "/abs", "..", "~/x", "a\\b", "a\x00b",
                                    ".git/hooks", ".git", ""])
# "" is not here (nor among the bad trace ids): an empty id is the form's way of leaving it out, and the
# release run then takes it from itself (delivery.intake.with_ids).
BAD_RELEASE_IDS = st.one_of(
    st.sampled_from(["-rel", ".rel", "rel..x", "rel.", "rel.lock", "rel x", "rel/x", "rel~1", "rel^", "r:1",
                     "a" * 64, "rel\n", "release/../main", "rel@{1}", "ré"]),
    st.text(min_size=1, max_size=70).filter(
        lambda s: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", s)),
)
BAD_APP_NAMES = st.one_of(
    st.sampled_from(["", "Sample", "-app", "app-", "app_x", "a" * 53, "../app", "app/x", "app.git", "ghost app"]),
    st.text(min_size=1, max_size=60).filter(lambda s: not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?", s)),
)
# "" is not here: an empty digest is the form's default and means "compute it from the content".
BAD_SHA256 = st.one_of(st.sampled_from(["0" * 63, "0" * 65, "g" * 64, "sha256:" + "0" * 64]),
                       st.text(min_size=1, max_size=80).filter(lambda s: not re.fullmatch(r"[0-9a-fA-F]{64}", s)))
BAD_STEPS = st.sampled_from([[], [50], [100, 50], [0, 100], [50, 50, 100], [10, 101], [-5, 100], [50, 99]])
ARBITRARY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


# --------------------------------------------------------------------------- the release request


def artifact(artifact_id: str, path: str, text: str, *, binary: bool = False) -> dict[str, Any]:
    data = text.encode()
    body: dict[str, Any] = {"artifact_id": artifact_id, "path": path, "sha256": hashlib.sha256(data).hexdigest(),
                            "validation": {"passed": True, "validator": "ci-lint"}}
    if binary:
        body["content_base64"] = base64.b64encode(data).decode()
    else:
        body["content"] = text
    return body


def request_base(release_id: str = "rel-fuzz-1") -> dict[str, Any]:
    return {
        "release_id": release_id,
        "app": "sample-app",
        "requested_by": "agent:release-manager",
        "target_environment": "dev",
        "strategy": {"name": "canary", "steps": [50, 100]},
        "revision": 1,
        "artifacts": [artifact("app-version", "src/sample_app/__init__.py", '__version__ = "0.9.1"\n'),
                      artifact("release-notes", "CHANGES.md", "- fuzz\n", binary=True)],
    }


VALID_RELEASE_IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,40}\Z")
VALID_PATHS = st.lists(st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}\Z").filter(
    lambda s: s.casefold() != ".git"), min_size=1, max_size=4).map("/".join)


@st.composite
def good_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Valid requests: any release id, paths and contents a caller may legitimately send."""
    body = request_base(draw(VALID_RELEASE_IDS))
    paths = draw(st.lists(VALID_PATHS, min_size=1, max_size=4, unique=True))
    body["artifacts"] = [artifact(f"a-{n}", path, draw(st.text(max_size=200)), binary=draw(st.booleans()))
                         for n, path in enumerate(paths)]
    body["strategy"] = draw(st.sampled_from([None, {"name": "rolling"}, {"name": "blue_green"},
                                             {"name": "canary", "steps": [10, 50, 100]}]))
    body["revision"] = draw(st.integers(1, 10_000))
    return body


def _request_skip(path: Path_) -> bool:
    return False


def _request_models(path: Path_) -> bool:
    return True


@st.composite
def _request_semantic(draw: st.DrawFn) -> Broken:
    base = request_base()
    index = draw(st.sampled_from([0, 1]))
    where = f"artifacts.{index}"
    kind = draw(st.sampled_from(["release_id", "app", "trace_id", "requested_by", "revision", "path", "sha256",
                                 "sha256_mismatch", "artifact_id", "no_artifacts", "duplicate_id",
                                 "duplicate_path", "both_contents", "no_content", "bad_base64", "not_validated",
                                 "steps", "strategy_name", "empty_validator"]))
    if kind == "release_id":
        return Broken({**base, "release_id": draw(BAD_RELEASE_IDS)}, "release_id", kind)
    if kind == "app":
        return Broken({**base, "app": draw(BAD_APP_NAMES)}, "app", kind)
    if kind == "trace_id":
        return Broken({**base, "trace_id": draw(st.sampled_from(["short", "x" * 65, "trace id!"]))},
                      "trace_id", kind)
    if kind == "requested_by":
        return Broken({**base, "requested_by": draw(st.sampled_from(["", " ", "\t\n"]))}, "requested_by", kind)
    if kind == "revision":
        return Broken({**base, "revision": draw(st.sampled_from([0, -1, "x", 1.5, None]))}, "revision", kind)
    if kind == "no_artifacts":
        return Broken({**base, "artifacts": []}, "artifacts", kind)
    if kind == "steps":
        return Broken({**base, "strategy": {"name": "canary", "steps": draw(BAD_STEPS)}}, "strategy.steps", kind)
    if kind == "strategy_name":
        return Broken({**base, "strategy": {"name": draw(st.sampled_from(["recreate", "", "Rolling", 1]))}},
                      "strategy", kind)
    artifacts = copy.deepcopy(base["artifacts"])
    item = artifacts[index]
    field = where
    if kind == "path":
        item["path"] = draw(ESCAPING_PATHS)
        field = f"{where}.path"
    elif kind == "sha256":
        item["sha256"] = draw(BAD_SHA256)
        field = f"{where}.sha256"
    elif kind == "sha256_mismatch":
        item["sha256"] = hashlib.sha256(b"something else").hexdigest()
    elif kind == "artifact_id":
        item["artifact_id"] = draw(st.sampled_from(["", "-x", "a b", "x" * 129, "a\nb", "é"]))
        field = f"{where}.artifact_id"
    elif kind == "duplicate_id":
        artifacts[1 - index]["artifact_id"] = item["artifact_id"]
        field = f"artifacts.{max(index, 1 - index)}.artifact_id"
    elif kind == "duplicate_path":
        artifacts[1 - index]["path"] = item["path"]
        field = f"artifacts.{max(index, 1 - index)}.path"
    elif kind == "both_contents":
        item["content"], item["content_base64"] = "x", base64.b64encode(b"x").decode()
    elif kind == "no_content":  # an empty file, whose digest is not the one declared
        item.pop("content", None)
        item.pop("content_base64", None)
        field = f"{where}.sha256"
    elif kind == "bad_base64":
        item.pop("content", None)
        item["content_base64"] = draw(st.sampled_from(["%%%", "abc", "!!!!", "YQ"]))
    elif kind == "not_validated":
        item["validation"] = {"passed": False, "validator": "ci-lint"}
    elif kind == "empty_validator":
        item["validation"] = {"passed": True, "validator": ""}
        field = f"{where}.validation.validator"
    return Broken({**base, "artifacts": artifacts}, field, kind)


# Not "artifacts" (a request may give source.ref instead: leaving both out is the no_artifacts case) and not
# "sha256" (left out, it is computed from the content).
REQUIRED_REQUEST = [("app",), ("requested_by",), ("artifacts", 0, "artifact_id"),
                    ("artifacts", 0, "path"), ("artifacts", 1, "validation"),
                    ("artifacts", 0, "validation", "passed"), ("artifacts", 1, "validation", "validator")]


def bad_requests() -> st.SearchStrategy[Broken]:
    """Release requests (the flow's ``request`` parameter) with one field broken."""
    return st.one_of(
        _request_semantic(),
        generic_breaks(request_base(), skip=_request_skip, models=_request_models, required=REQUIRED_REQUEST),
    )


# --------------------------------------------------------------------------- delivery.yaml


def config_base() -> dict[str, Any]:
    return yaml.safe_load(GITOPS_CONFIG)


_FREE_KEYED = {"environments", "policies", "values"}


def _config_skip(path: Path_) -> bool:
    # values are free-form (template values); nothing under them is typed by delivery.yaml.
    return len(path) >= 4 and path[0] == "environments" and path[2] == "values"


def _config_models(path: Path_) -> bool:
    return path[-1] not in _FREE_KEYED


@st.composite
def _config_semantic(draw: st.DrawFn) -> Broken:
    base = config_base()
    env = draw(st.sampled_from(base["path"]))
    at = f"environments.{env}"
    kind = draw(st.sampled_from(["min_approvers", "unreachable", "no_approvers", "twice", "timeout", "namespace",
                                 "runtime", "infrastructure", "strategy", "steps", "cel", "policy_name",
                                 "health", "probe_status", "probe_url", "drift_mode", "degraded_after",
                                 "ignore", "path_dup", "path_missing", "env_extra", "env_name", "path_empty"]))
    doc = copy.deepcopy(base)
    env_doc = doc["environments"][env]
    field = at
    if kind == "min_approvers":
        env_doc["approval"] = {"required": True, "approvers": ["user:a"],
                               "min_approvers": draw(st.sampled_from([0, -1, "two"]))}
        field = f"{at}.approval.min_approvers"
    elif kind == "unreachable":
        env_doc["approval"] = {"required": True, "approvers": ["user:a", "user:b"], "min_approvers": 3}
        field = f"{at}.approval.min_approvers"
    elif kind == "no_approvers":
        env_doc["approval"] = {"required": True, "approvers": []}
        field = f"{at}.approval.min_approvers"
    elif kind == "twice":
        env_doc["approval"] = {"required": True, "approvers": ["user:alice", "User: Alice"]}
        field = f"{at}.approval.approvers"
    elif kind == "timeout":
        env_doc["approval"] = {"timeout_seconds": draw(st.sampled_from([0, 7 * 24 * 3600 + 1, -3]))}
        field = f"{at}.approval.timeout_seconds"
    elif kind == "namespace":
        env_doc["namespace"] = draw(st.sampled_from(["", "Bad_NS", "-x", "x" * 64, "../kube-system", "a b"]))
        field = f"{at}.namespace"
    elif kind in ("runtime", "infrastructure"):
        env_doc[kind] = draw(st.sampled_from(["", "local", "kubernetes-runtime/", "/x", "a/b/c", "../x/y"]))
        field = f"{at}.{kind}"
    elif kind == "strategy":
        env_doc["strategy"] = draw(st.sampled_from(["recreate", "", "Rolling", {"name": "nope"}]))
        field = f"{at}.strategy"
    elif kind == "steps":
        env_doc["strategy"] = {"name": "canary", "steps": draw(BAD_STEPS)}
        field = f"{at}.strategy.steps"
    elif kind == "cel":
        env_doc["policies"] = {"gate": draw(st.sampled_from(["build.tests.failed ==", "(((", "a &&& b", "", "'x"]))}
        field = f"{at}.policies.gate"
    elif kind == "policy_name":
        env_doc["policies"] = {draw(st.sampled_from(["bad name", "-x", "", "x" * 64])): "true"}
        field = f"{at}.policies"
    elif kind == "health":
        env_doc["health"] = {"timeout_seconds": draw(st.sampled_from([0, 3601, "soon"]))}
        field = f"{at}.health.timeout_seconds"
    elif kind == "probe_status":
        env_doc["health"] = {"http_probe": {"path": "/healthz", "expected_status": draw(st.sampled_from([99, 600]))}}
        field = f"{at}.health.http_probe.expected_status"
    elif kind == "probe_url":
        env_doc["health"] = {"http_probe": {"url": draw(st.sampled_from(["ftp://x", "file:///etc/passwd"]))}}
        field = f"{at}.health.http_probe.url"
    elif kind == "drift_mode":
        env_doc["drift"] = {"mode": draw(st.sampled_from(["ignore", "", "RECONCILE"]))}
        field = f"{at}.drift.mode"
    elif kind == "degraded_after":
        env_doc["drift"] = {"degraded_after": draw(st.sampled_from([0, -1]))}
        field = f"{at}.drift.degraded_after"
    elif kind == "ignore":
        env_doc["drift"] = {"ignore": [""]}
        field = f"{at}.drift.ignore.0"
    elif kind == "path_dup":
        doc["path"] = [*doc["path"], env]
        field = "path"
    elif kind == "path_missing":
        doc["path"] = [*doc["path"], "qa"]
        field = "path"
    elif kind == "path_empty":
        doc["path"] = []
        field = "path"
    elif kind == "env_extra":
        doc["environments"]["qa"] = copy.deepcopy(env_doc)
        field = "environments"
    elif kind == "env_name":
        name = draw(st.sampled_from(["Prod", "prod_1", "-x", "x" * 40]))
        doc["path"] = [name if item == env else item for item in doc["path"]]
        doc["environments"] = {(name if key == env else key): value for key, value in doc["environments"].items()}
        field = "path"
    return Broken(yaml.safe_dump(doc), field, kind)


REQUIRED_CONFIG = [("path",), ("environments",), ("environments", "dev", "namespace"),
                   ("environments", "prod", "runtime")]


def bad_configs() -> st.SearchStrategy[Broken]:
    """delivery.yaml texts with one field broken."""
    generic = generic_breaks(config_base(), skip=_config_skip, models=_config_models, required=REQUIRED_CONFIG)
    return st.one_of(_config_semantic(), generic.map(lambda b: Broken(yaml.safe_dump(b.document), b.field, b.what)))


@st.composite
def good_configs(draw: st.DrawFn) -> str:
    doc = config_base()
    for env in doc["path"]:
        env_doc = doc["environments"][env]
        env_doc["strategy"] = draw(st.sampled_from(["rolling", "blue_green", "canary",
                                                    {"name": "canary", "steps": [25, 100]}]))
        env_doc["values"] = draw(st.dictionaries(st.text(min_size=1, max_size=8), ARBITRARY_JSON, max_size=3))
        if env_doc["approval"].get("required"):
            env_doc["approval"]["min_approvers"] = draw(st.integers(1, len(env_doc["approval"]["approvers"])))
    return yaml.safe_dump(doc)


# --------------------------------------------------------------------------- delivery-build.yaml


def build_base() -> dict[str, Any]:
    return yaml.safe_load(BUILD_SETTINGS)


def _build_skip(path: Path_) -> bool:
    return False


def _build_models(path: Path_) -> bool:
    return path[-1] != "env"


@st.composite
def _build_semantic(draw: st.DrawFn) -> Broken:
    doc = build_base()
    kind = draw(st.sampled_from(["checkout_path", "workdir", "repository", "app", "package_name", "command",
                                 "image_command", "trigger", "timeout", "port", "env_value"]))
    if kind == "checkout_path":
        section, key = draw(st.sampled_from([("test", "working_directory"), ("test", "junit"), ("package", "path"),
                                             ("image", "context"), ("pipeline", "path")]))
        doc[section][key] = draw(CHECKOUT_ESCAPES)
        return Broken(yaml.safe_dump(doc), f"{section}.{key}", kind)
    if kind == "workdir":
        doc["image"]["workdir"] = draw(st.sampled_from(["app", "", "/app dir", "C:\\app"]))
        return Broken(yaml.safe_dump(doc), "image.workdir", kind)
    if kind == "repository":
        doc["image"]["repository"] = draw(st.sampled_from(["", "Sample", "a//b", "/x", "x:tag", "a b"]))
        return Broken(yaml.safe_dump(doc), "image.repository", kind)
    if kind in ("app", "package_name"):
        value = draw(st.sampled_from(["", "App", "-x", "x" * 65, "a b", "../x"]))
        if kind == "app":
            doc["app"] = value
            return Broken(yaml.safe_dump(doc), "app", kind)
        doc["package"]["name"] = value
        return Broken(yaml.safe_dump(doc), "package.name", kind)
    if kind == "command":
        doc["test"]["command"] = draw(st.sampled_from(["", "   ", "\n\t"]))
        return Broken(yaml.safe_dump(doc), "test.command", kind)
    if kind == "image_command":
        doc["image"]["command"] = []
        return Broken(yaml.safe_dump(doc), "image.command", kind)
    if kind == "trigger":
        doc["pipeline"]["trigger"] = []
        return Broken(yaml.safe_dump(doc), "pipeline.trigger", kind)
    if kind == "timeout":
        section = draw(st.sampled_from(["test", "package", "image"]))
        doc[section]["timeout_minutes"] = draw(st.sampled_from([0, 361, -1]))
        return Broken(yaml.safe_dump(doc), f"{section}.timeout_minutes", kind)
    if kind == "port":
        doc["image"]["port"] = draw(st.sampled_from([0, 65536, -80]))
        return Broken(yaml.safe_dump(doc), "image.port", kind)
    doc["image"]["env"] = {"PYTHONPATH": draw(st.sampled_from([[1], {"a": 1}]))}
    return Broken(yaml.safe_dump(doc), "image.env.PYTHONPATH", kind)


REQUIRED_BUILD = [("app",), ("test",), ("test", "command"), ("package", "name"), ("image", "repository"),
                  ("image", "command")]


def bad_build_settings() -> st.SearchStrategy[Broken]:
    """delivery-build.yaml texts with one field broken."""
    generic = generic_breaks(build_base(), skip=_build_skip, models=_build_models, required=REQUIRED_BUILD)
    return st.one_of(_build_semantic(), generic.map(lambda b: Broken(yaml.safe_dump(b.document), b.field, b.what)))


# --------------------------------------------------------------------------- documents that are not mappings


NOT_A_MAPPING = st.one_of(
    st.sampled_from(["- a\n- b\n", "just text\n", "42\n", "true\n", "~\n", "", "---\n", "[1, 2\n", "a: [\n",
                     "{a: 1\n", "key: value\n  bad indent: x\n", "\t- tab\n", "!!python/object:os.system {}\n",
                     "a: !!binary zz\n", "&a [*a]\n", "a: *undefined\n"]),
    st.text(max_size=200),
)


# --------------------------------------------------------------------------- manifest templates


def deploy_templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(DEPLOY.iterdir()) if p.is_file()}


def manifest_spec(templates: dict[str, str], changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"release_id": "rel-fuzz-1", "trace_id": "trace-fuzz-0001", "app": "sample-app", "environment": "dev",
            "namespace": "sample-dev", "image": DIGEST_IMAGE, "values": {"replicas": 1},
            "templates": templates, **(changes or {})}


INJECTIONS = st.sampled_from([
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch /tmp/pwned').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ app.__class__.__base__.__subclasses__() }}",
    "{{ values.__class__.__init__.__globals__ }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ range(100000000) | list | length }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{% include '../../etc/passwd' %}",
    "{% include 'service.yaml.j2' %}{{ ''.__class__ }}",
])  # {% include %} / {% extends %} of another file of deploy/ is allowed: the loader serves nothing else.
UNBALANCED = st.sampled_from(["{{ values.replicas", "{% if values.replicas %}", "{{ }}", "{% endfor %}",
                              "{{ values.replicas }}}", "{% for x in %}{% endfor %}", "{{ values[ }}", "{#",
                              "{% raw %}", "{{ values.replicas | }}", "{% set %}"])
UNKNOWN_VARIABLE = st.from_regex(r"\A[a-z][a-zA-Z0-9]{0,10}\Z").filter(
    lambda name: name not in {"replicas", "containerPort", "servicePort", "progressDeadlineSeconds", "podAnnotations",
                              "config", "resources", "ingress", "items", "keys", "values", "get", "pop", "update",
                              "copy", "clear", "setdefault", "popitem", "fromkeys", "path"})
UNKNOWN_TOP = st.from_regex(r"\A[a-z][a-zA-Z0-9_]{0,10}\Z").filter(
    lambda name: name not in {"app", "environment", "namespace", "image", "values", "range", "dict", "lipsum",
                              "cycler", "joiner", "true", "false", "none", "and", "or", "not", "in", "is", "if",
                              "else", "for", "loop", "self"})

OBJECT_BASE: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "extra", "labels": {"a": "b"}},
    "spec": {"replicas": 1, "progressDeadlineSeconds": 60, "selector": {"matchLabels": {"a": "b"}},
             "template": {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}},
                          "spec": {"containers": [{"name": "c", "image": DIGEST_IMAGE,
                                                   "ports": [{"containerPort": 8080}],
                                                   "resources": {"limits": {"cpu": "1"}}}]}}},
}
SERVICE_BASE: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra-svc"},
                                "spec": {"ports": [{"port": 80}]}}
C0 = "spec.template.spec.containers[0]"
OBJECT_BREAKS: list[tuple[str, Path_, Any, str]] = [
    ("Deployment", ("apiVersion",), None, "apiVersion"),
    ("Deployment", ("kind",), 7, "kind"),
    ("Deployment", ("metadata",), "x", "metadata.name"),
    ("Deployment", ("metadata", "name"), "Bad_Name", "metadata.name"),
    ("Deployment", ("metadata", "labels"), {"a": [1]}, "metadata.labels"),
    ("Deployment", ("metadata", "annotations"), ["x"], "metadata.annotations"),
    ("Deployment", ("spec",), "x", "spec"),
    ("Deployment", ("spec", "replicas"), "two", "spec.replicas"),
    ("Deployment", ("spec", "replicas"), 1001, "spec.replicas"),
    ("Deployment", ("spec", "replicas"), True, "spec.replicas"),
    ("Deployment", ("spec", "progressDeadlineSeconds"), 0, "spec.progressDeadlineSeconds"),
    ("Deployment", ("spec", "template"), ["x"], "spec.template"),
    ("Deployment", ("spec", "template", "metadata"), ["x"], "spec.template.metadata"),
    ("Deployment", ("spec", "template", "metadata", "labels"), {"a": 1}, "spec.template.metadata.labels"),
    ("Deployment", ("spec", "template", "spec"), "x", "spec.template.spec"),
    ("Deployment", ("spec", "template", "spec", "containers"), [], "spec.template.spec.containers"),
    ("Deployment", ("spec", "template", "spec", "containers"), {"c": 1}, "spec.template.spec.containers"),
    ("Deployment", ("spec", "template", "spec", "containers", 0), "c", f"{C0}.name"),
    ("Deployment", ("spec", "template", "spec", "containers", 0, "image"), "nginx:latest", f"{C0}.image"),
    ("Deployment", ("spec", "template", "spec", "containers", 0, "ports"), 8080, f"{C0}.ports"),
    ("Deployment", ("spec", "template", "spec", "containers", 0, "ports", 0), "8080", f"{C0}.ports[0]"),
    ("Deployment", ("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"), 0,
     f"{C0}.ports[0].containerPort"),
    ("Deployment", ("spec", "template", "spec", "containers", 0, "resources"), "big", f"{C0}.resources"),
    ("Deployment", ("metadata", "namespace"), "kube-system", "metadata.namespace"),
    ("Service", ("spec", "ports"), [], "spec.ports"),
    ("Service", ("spec", "ports", 0), "80", "spec.ports[0]"),
    ("Service", ("spec", "ports", 0, "port"), 70000, "spec.ports[0].port"),
    ("Service", ("spec",), ["x"], "spec.ports"),
]


@st.composite
def bad_templates(draw: st.DrawFn) -> Broken:
    """A deploy/ folder of the sample app with one template (or values.yaml) broken; field = what to name."""
    templates = deploy_templates()
    name = draw(st.sampled_from(sorted(n for n in templates if n.endswith(".yaml.j2"))))
    display = f"deploy/{name}"
    text = templates[name]
    lines = text.splitlines(keepends=True)
    # First or last line: never inside an {% if %} that is false (a skipped block is not evaluated).
    at = draw(st.sampled_from([0, len(lines)]))
    kind = draw(st.sampled_from(["unknown_value", "unknown_variable", "unbalanced", "injection", "object",
                                 "values_not_mapping", "values_not_yaml", "duplicate", "bad_spec"]))

    def insert(snippet: str) -> str:
        return "".join([*lines[:at], snippet + "\n", *lines[at:]])

    if kind == "unknown_value":
        variable = draw(UNKNOWN_VARIABLE)
        templates[name] = insert(f"# {{{{ values.{variable} }}}}")
        return Broken(templates, f"values.{variable}", kind)
    if kind == "unknown_variable":
        variable = draw(UNKNOWN_TOP)
        templates[name] = insert(f"# {{{{ {variable} }}}}")
        return Broken(templates, variable, kind)
    if kind == "unbalanced":
        templates[name] = insert(draw(UNBALANCED))
        return Broken(templates, display, kind)
    if kind == "injection":
        templates[name] = insert("# " + draw(INJECTIONS))
        return Broken(templates, display, kind)
    if kind == "values_not_mapping":
        templates["values.yaml"] = draw(st.sampled_from(["- a\n- b\n", "text\n", "42\n"]))
        return Broken(templates, "deploy/values.yaml", kind)
    if kind == "values_not_yaml":
        templates["values.yaml"] = draw(st.sampled_from(["a: [\n", "{a: 1\n", "a: b\n c: d\n"]))
        return Broken(templates, "deploy/values.yaml", kind)
    if kind == "duplicate":
        templates["zz-copy.yaml.j2"] = templates["service.yaml.j2"]
        return Broken(templates, "metadata.name", kind)
    if kind == "bad_spec":
        field, value = draw(st.sampled_from([("image", "nginx:latest"), ("image", "x@sha256:short"),
                                             ("app", "Bad App"), ("namespace", "../kube-system"),
                                             ("environment", "PROD"), ("templates", {"a/b.yaml.j2": "x"}),
                                             ("templates", {"values.yaml": "a: 1"}), ("values", [1])]))
        return Broken({"spec_changes": {field: value}, "templates": templates}, field, kind)
    kind_name, path, value, field = draw(st.sampled_from(OBJECT_BREAKS))
    obj = copy.deepcopy(OBJECT_BASE if kind_name == "Deployment" else SERVICE_BASE)
    if value is None:
        obj = deleted(obj, path)
    else:
        obj = replaced(obj, path, value)
    templates["zz-extra.yaml.j2"] = yaml.safe_dump(obj)
    return Broken(templates, field, f"object {kind_name}")


# --------------------------------------------------------------------------- approval inputs

# A fixed key (not a secret: a test vector), so the same examples are drawn on every run and machine.
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = "user:alice"
APPROVAL_STATEMENT = Statement(kind="approval", signer=SIGNER, release_id="rel-fuzz-1", revision=2,
                               environment="prod", plan_digest="sha256:" + "c" * 64, decision=Decision.APPROVE,
                               at=datetime(2026, 12, 3, 2, 0, 0, tzinfo=UTC))
SIGNED_APPROVAL = SignedStatement(statement=APPROVAL_STATEMENT, signature=sshsig.sign(
    APPROVAL_STATEMENT.canonical(), key=SIGNING_KEY, namespace=NAMESPACE))
STATEMENT_FIELDS = [line.split(": ", 1)[0] for line in APPROVAL_STATEMENT.canonical().decode().splitlines()[1:]]
# One line of text: what a value of the signed text can be (a line break starts another line).
ONE_LINE = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=80)
BAD_STATEMENT_VALUES = {
    "kind": ["approve", "", "APPROVAL", "release"], "signer": ["", "\x00alice", "user:\x7f"],
    "release_id": ["rel x", "-rel", "rel/../x", "a" * 64], "revision": ["0", "-1", "two", "1.5", ""],
    "environment": ["\x01prod", ""], "plan_digest": ["sha256:xyz", "c" * 64, "SHA256:" + "C" * 64, ""],
    "decision": ["maybe", "APPROVED", ""], "at": ["yesterday", "2026-12-03", "2026-13-45T99:99:99Z", ""],
}


def signing_registry() -> Registry:
    """The registry where SIGNING_KEY is SIGNER's key."""
    public = SIGNING_KEY.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return Registry.parse(registry_line(public, identity=SIGNER) + "\n")


def statement_with(field: str, value: str) -> str:
    """The signed approval statement's text with the value of ``field`` replaced."""
    return "".join(f"{field}: {value}\n" if line.startswith(f"{field}: ") else line + "\n"
                   for line in APPROVAL_STATEMENT.canonical().decode().splitlines())


@st.composite
def statement_values(draw: st.DrawFn) -> Broken:
    """The statement with one field's value replaced by any one-line text: parsed, or refused naming the field."""
    field = draw(st.sampled_from(STATEMENT_FIELDS))
    return Broken(statement_with(field, draw(ONE_LINE)), field, "any value")


@st.composite
def bad_statements(draw: st.DrawFn) -> Broken:
    """The statement with one field's value made invalid, left out, repeated or out of order."""
    lines = APPROVAL_STATEMENT.canonical().decode().splitlines()
    kind = draw(st.sampled_from(["value", "missing", "repeated", "swapped"]))
    index = draw(st.integers(min_value=1, max_value=len(lines) - 1))
    field = lines[index].split(": ", 1)[0]
    if kind == "value":
        return Broken(statement_with(field, draw(st.sampled_from(BAD_STATEMENT_VALUES[field]))), field, kind)
    if kind == "missing":
        return Broken("\n".join(lines[:index] + lines[index + 1:]) + "\n", field, kind)
    if kind == "repeated":
        return Broken("\n".join(lines[:index + 1] + lines[index:]) + "\n", field, kind)
    index = max(index, 2)  # swap with the line before it (not the header)
    swapped = lines[:index - 1] + [lines[index], lines[index - 1]] + lines[index + 1:]
    return Broken("\n".join(swapped) + "\n", lines[index - 1].split(": ", 1)[0], kind)


def _signature_body() -> str:
    return "".join(SIGNED_APPROVAL.signature.strip().splitlines()[1:-1])


@st.composite
def pasted_signatures(draw: st.DrawFn) -> str:
    """What a person may paste as a signature: the signed approval damaged one way, or any text."""
    statement = APPROVAL_STATEMENT.canonical().decode()
    body = _signature_body()
    kind = draw(st.sampled_from(["any", "body", "cut", "armor", "one-line", "statement"]))
    if kind == "any":
        return draw(st.text(max_size=400))
    if kind == "body":  # a few characters of the base64 replaced
        chars = list(body)
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            chars[draw(st.integers(min_value=0, max_value=len(chars) - 1))] = draw(
                st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!- "))
        body = "".join(chars)
    elif kind == "cut":
        start = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:start] + body[start + draw(st.integers(min_value=1, max_value=40)):]
    elif kind == "armor":  # a marker damaged, moved or left out
        begin, end = draw(st.sampled_from([(sshsig.BEGIN, ""), ("", sshsig.END), (sshsig.END, sshsig.BEGIN),
                                           (sshsig.BEGIN.lower(), sshsig.END), (sshsig.BEGIN, sshsig.END[:-1])]))
        return f"{statement}\n{begin}\n{body}\n{end}\n"
    elif kind == "statement":  # the signature block with another text before it
        statement = draw(st.text(max_size=200))
    text = f"{statement}\n{sshsig.BEGIN}\n{body}\n{sshsig.END}\n"
    return " ".join(text.split()) if kind == "one-line" else text


APPROVAL_INPUT_BASE = {"decision": "approve", "approver": "user:bob", "comment": "", "signature": "pasted"}


@st.composite
def approval_inputs(draw: st.DrawFn) -> Broken:
    """An approval's run input with one field given any JSON value or any text, or an unknown field added."""
    field = draw(st.sampled_from([*APPROVAL_INPUT_BASE, "zz_extra"]))
    value = draw(st.one_of(ARBITRARY_JSON, st.text(max_size=120), st.text(min_size=2000, max_size=2100),
                           st.sampled_from(["", " ", "APPROVE", "user:bob\n", None])))
    return Broken({**APPROVAL_INPUT_BASE, field: value}, field, "any value")
