"""A Kubernetes cluster as the runtime: server-side apply, prune by label, one LIST per kind, rollout health.

It speaks to whatever API server the kubeconfig (or the in-cluster service account) names, through
the official ``kubernetes`` client's ``DynamicClient``. Every foreign exception is translated into
the product's hierarchy here: 401/403 -> AuthenticationError, 404 -> NotFound, 409 -> ConflictError,
400/422 -> InvalidInput, 429/5xx and network failures -> TransientError.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from delivery.errors import (
    AuthenticationError,
    ConflictError,
    DeliveryError,
    InvalidInput,
    NotFound,
    PermanentError,
    TransientError,
)
from delivery.labels import FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from delivery.objects import ObjectKey, apply_rank
from delivery.provider_timing import timed_provider

T = TypeVar("T")
DEFAULT_KINDS = ("v1/ConfigMap", "v1/Secret", "v1/Service", "apps/v1/Deployment", "networking.k8s.io/v1/Ingress")


class ObjectRef(ObjectKey):
    """Which object: enough to find it again, plus the resourceVersion seen."""

    resource_version: str | None = None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        """The reference of an object (a manifest or a live object), its namespace as the object has it.

        Unlike :func:`delivery.objects.object_key` it keeps a cluster-scoped object's namespace: the
        runtime asks the API which resources are namespaced when it addresses one.
        """
        meta = obj.get("metadata") or {}
        return cls(
            api_version=obj["apiVersion"],
            kind=obj["kind"],
            namespace=meta.get("namespace"),
            name=meta["name"],
            resource_version=meta.get("resourceVersion"),
        )


class RolloutStatus(BaseModel):
    """A Deployment's rollout, read the way ``kubectl rollout status`` reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    namespace: str
    generation: int = 0
    observed_generation: int = 0
    replicas: int = Field(default=0, description="Desired (spec.replicas)")
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    progress_deadline_seconds: int | None = None
    ready: bool = Field(description="The rollout finished and every updated replica is available")
    failed: bool = Field(description="The rollout exceeded its progress deadline")
    message: str
    conditions: list[dict[str, Any]] = Field(default_factory=list)


def rollout_of(deployment: Mapping[str, Any]) -> RolloutStatus:
    """Judge a Deployment's rollout from its spec and status (pure; used by :meth:`rollout_status`).

    Args:
        deployment: the live Deployment.
    """
    meta, spec, status = deployment.get("metadata") or {}, deployment.get("spec") or {}, deployment.get("status") or {}
    name = meta.get("name", "?")
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    conditions = list(status.get("conditions") or [])
    progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
    failed = bool(progressing and progressing.get("reason") == "ProgressDeadlineExceeded")
    ready = False
    if failed:
        message = f'deployment "{name}" exceeded its progress deadline'
    elif generation > observed:
        message = f'waiting for deployment "{name}" spec update to be observed'
    elif updated < desired:
        message = f'waiting for deployment "{name}": {updated} of {desired} updated replicas are available'
    elif total > updated:
        message = f'waiting for deployment "{name}": {total - updated} old replicas are pending termination'
    elif available < updated:
        message = f'waiting for deployment "{name}": {available} of {updated} updated replicas are available'
    else:
        ready = True
        message = f'deployment "{name}" successfully rolled out'
    return RolloutStatus(
        name=name,
        namespace=meta.get("namespace", ""),
        generation=generation,
        observed_generation=observed,
        replicas=desired,
        updated_replicas=updated,
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=available,
        progress_deadline_seconds=spec.get("progressDeadlineSeconds"),
        ready=ready,
        failed=failed,
        message=message,
        conditions=conditions,
    )


def _translate(exc: BaseException, action: str) -> DeliveryError:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, ApiException):
        detail = _api_message(exc)
        code = exc.status or 0
        if code in (401, 403):
            return AuthenticationError(f"{action}: the API server refused the credentials ({code}): {detail}")
        if code == 404:
            return NotFound(f"{action}: {detail}")
        if code == 409:
            return ConflictError(f"{action}: {detail}")
        if code in (400, 422):
            return InvalidInput(f"{action}: the API server refused the object ({code}): {detail}")
        if code == 429 or code >= 500 or code == 0:
            return TransientError(f"{action}: API server answered {code}: {detail}")
        return PermanentError(f"{action}: API server answered {code}: {detail}")
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(f"{action}: the API server does not serve this kind ({exc})")
    if isinstance(exc, ConfigException):
        return InvalidInput(f"{action}: client configuration (kubeconfig or in-cluster settings): {exc}")
    if isinstance(exc, json.JSONDecodeError):
        return TransientError(f"{action}: the API server answered something that is not JSON: {exc}")
    if isinstance(exc, ValueError):  # the client refusing an object before sending it (e.g. no namespace)
        return InvalidInput(f"{action}: {exc}")
    if isinstance(exc, (HTTPError, OSError)):
        return TransientError(f"{action}: cannot reach the API server: {type(exc).__name__}: {exc}")
    return PermanentError(f"{action}: {type(exc).__name__}: {exc}")


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)[:500]
    return f"{exc.status} {exc.reason}"


@contextmanager
def _boundary(action: str) -> Iterator[None]:
    try:
        yield
    except DeliveryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the block boundary translates everything foreign
        raise _translate(exc, action) from exc


_discovery: Path | None = None


def _discovery_folder() -> Path:
    """This process's folder for discovery caches, removed when the process exits."""
    global _discovery
    # a forked child inherits the parent's path: it gets its own, so processes never share a cache file
    if _discovery is None or not _discovery.is_dir() or not _discovery.name.startswith(
            f"delivery-k8s-discovery-{os.getpid()}-"):
        _discovery = Path(tempfile.mkdtemp(prefix=f"delivery-k8s-discovery-{os.getpid()}-"))
        atexit.register(shutil.rmtree, _discovery, ignore_errors=True)
    return _discovery


@timed_provider
class KubernetesRuntime(Block):
    """A Kubernetes API server reached from a kubeconfig or from inside the cluster."""

    _block_type_name = "Kubernetes Runtime"
    _block_type_slug = "kubernetes-runtime"
    _description = "Server-side apply, prune by managed labels, one LIST per kind, rollout health."

    kubeconfig: SecretStr | None = Field(default=None, description="kubeconfig YAML text")
    context: str | None = Field(default=None, description="kubeconfig context (default: current-context)")
    in_cluster: bool = Field(default=False, description="Use the pod's service account instead of a kubeconfig")
    field_manager: str = Field(default=FIELD_MANAGER, description="Field manager of server-side apply")
    managed_kinds: list[str] = Field(
        default_factory=lambda: list(DEFAULT_KINDS), description="apiVersion/Kind pairs listed and pruned"
    )
    request_timeout_seconds: float = Field(default=15.0, gt=0, description="Timeout of one Kubernetes API request")

    _dynamic: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    # ------------------------------------------------------------------ connection

    def _client(self) -> Any:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = self._connect()
            return self._dynamic

    def _connect(self) -> Any:
        from kubernetes import client, config
        from kubernetes.dynamic import DynamicClient

        with _boundary("connect to the Kubernetes API"):
            if self.in_cluster:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            elif self.kubeconfig is not None:
                try:
                    document = yaml.safe_load(self.kubeconfig.get_secret_value())
                except yaml.YAMLError:
                    raise InvalidInput("kubeconfig: not valid YAML") from None
                if not isinstance(document, dict):
                    raise InvalidInput("kubeconfig: must be a kubeconfig document")
                api_client = config.new_client_from_config_dict(document, context=self.context)
            else:
                raise InvalidInput("kubeconfig: give the kubeconfig text or set in_cluster")
            # The discovery cache file is per API server and per process, so processes never race on it.
            host = hashlib.sha256(api_client.configuration.host.encode()).hexdigest()[:16]
            return DynamicClient(api_client, cache_file=str(_discovery_folder() / f"{host}.json"))

    def _resource(self, api_version: str, kind: str) -> Any:
        with _boundary(f"discover {api_version} {kind}"):
            return self._client().resources.get(api_version=api_version, kind=kind)

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        with _boundary(action):
            return fn()

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        return json.loads(response.data)

    # ------------------------------------------------------------------ reading

    def get(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        resource = self._resource(api_version, kind)
        try:
            return self._call(
                f"get {kind} {namespace}/{name}",
                lambda: self._json(self._client().get(resource, name=name, namespace=namespace, serialize=False,
                                                      _request_timeout=self.request_timeout_seconds)),
            )
        except NotFound:
            return None

    def list_managed(self, *, selector: str, namespace: str | None = None,
                     kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every object the selector picks, with exactly one LIST request per kind.

        Args:
            selector: a label selector, e.g. :func:`delivery.labels.managed_selector`.
            namespace: one namespace, or None for all.
            kinds: ``apiVersion/Kind`` entries to list (default: ``managed_kinds``).

        Returns:
            Plain dicts, each with ``apiVersion`` and ``kind`` set, in apply order.
        """
        objects: list[dict[str, Any]] = []
        for entry in kinds or self.managed_kinds:
            api_version, kind = entry.rsplit("/", 1)
            resource = self._resource(api_version, kind)
            body = self._call(
                f"list {kind} ({selector})",
                lambda resource=resource: self._json(self._client().get(
                    resource, namespace=namespace if resource.namespaced else None, label_selector=selector,
                    serialize=False, _request_timeout=self.request_timeout_seconds,
                )),
            )
            for item in body.get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                objects.append(item)
        return sorted(objects, key=_apply_rank)

    def rollout_status(self, *, name: str, namespace: str) -> RolloutStatus:
        """Read a Deployment's rollout.

        Raises:
            NotFound: there is no such Deployment.
        """
        live = self.get(api_version="apps/v1", kind="Deployment", name=name, namespace=namespace)
        if live is None:
            raise NotFound(f"Deployment {namespace}/{name} does not exist")
        return rollout_of(live)

    def probe_service(self, *, service: str, namespace: str, path: str = "/healthz",
                      port: int | str | None = None, timeout_seconds: float = 5.0) -> int:
        """Call a Service through the API server's service proxy and return the HTTP status.

        Args:
            service: the Service's name.
            namespace: its namespace.
            path: the path to call, e.g. ``/healthz``.
            port: the Service port (number or name); default the Service's only port.
            timeout_seconds: the request's time limit.

        Returns:
            The status the proxied call answered (the API server's own status when it could not
            proxy, e.g. 404 or 503).

        Raises:
            TransientError: the API server could not be reached.
            AuthenticationError: the credentials were refused.
        """
        from kubernetes.client.exceptions import ApiException

        target = f"{service}:{port}" if port is not None else service
        url = f"/api/v1/namespaces/{namespace}/services/{target}/proxy/{path.lstrip('/')}"
        with _boundary(f"probe {namespace}/{target}{path}"):
            try:
                response = self._client().request("get", url, serialize=False, _request_timeout=timeout_seconds)
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise
                return int(exc.status or 0)
            return int(response.status)

    # ------------------------------------------------------------------ writing

    def ensure_namespace(self, name: str) -> bool:
        """Create a namespace unless it exists. Returns True when created."""
        if self.get(api_version="v1", kind="Namespace", name=name) is not None:
            return False
        resource = self._resource("v1", "Namespace")
        try:
            self._call(f"create namespace {name}", lambda: self._client().create(
                resource, body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                serialize=False, _request_timeout=self.request_timeout_seconds))
        except ConflictError:
            return False  # created by someone else meanwhile
        return True

    def apply(self, objects: list[dict[str, Any]], *, dry_run: bool = False) -> list[ObjectRef]:
        """Server-side apply each object under the field manager, in apply order.

        Fields this manager owned and no longer applies are removed by the API server; fields other
        managers changed are taken back (Git is the authority). An unchanged object keeps its
        resourceVersion.

        Args:
            objects: the desired objects.
            dry_run: let the API server validate without storing (``dryRun=All``).

        Returns:
            References with the resourceVersion each object has after the apply.
        """
        refs: list[ObjectRef] = []
        for obj in sorted(objects, key=_apply_rank):
            if not isinstance(obj, Mapping) or not obj.get("apiVersion") or not obj.get("kind"):
                raise InvalidInput("apply: every object needs apiVersion and kind")
            ref = ObjectRef.of(obj)
            resource = self._resource(ref.api_version, ref.kind)
            body = {k: v for k, v in obj.items() if k != "status"}
            live = self._call(f"apply {ref}", lambda resource=resource, body=body, ref=ref: self._json(
                self._client().server_side_apply(
                    resource, body=body, name=ref.name, namespace=ref.namespace if resource.namespaced else None,
                    field_manager=self.field_manager, force_conflicts=True, dry_run="All" if dry_run else None,
                    serialize=False, _request_timeout=self.request_timeout_seconds,
                )))
            refs.append(ObjectRef.of({**live, "apiVersion": ref.api_version, "kind": ref.kind}))
        return refs

    def delete(self, ref: ObjectRef, *, dry_run: bool = False) -> bool:
        """Delete one object. Returns False when it was already gone."""
        resource = self._resource(ref.api_version, ref.kind)
        try:
            self._call(f"delete {ref}", lambda: self._client().delete(
                resource, name=ref.name, namespace=ref.namespace if resource.namespaced else None,
                dry_run="All" if dry_run else None, propagation_policy="Background", serialize=False,
                _request_timeout=self.request_timeout_seconds))
        except NotFound:
            return False
        return True

    def prune(
        self,
        desired: list[dict[str, Any]],
        *,
        selector: str,
        dry_run: bool = False,
        live: list[dict[str, Any]] | None = None,
    ) -> list[ObjectRef]:
        """Delete what the selector picks that ``desired`` no longer has.

        Only objects carrying ``app.kubernetes.io/managed-by=gitops-delivery`` are ever deleted, even
        if the selector were wider: what the product does not manage is never touched.

        Args:
            desired: the objects Git holds.
            selector: the managed selector of the application and environment.
            dry_run: report what would be deleted without deleting.
            live: the selector's objects if the caller just listed them (saves the LISTs).

        Returns:
            The objects deleted (or that would be).
        """
        if f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}" not in selector.split(","):
            raise InvalidInput(f"prune: selector {selector!r} must require {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
        wanted = {ObjectRef.of(obj).identity for obj in desired}
        kinds = list(dict.fromkeys([*self.managed_kinds, *(f"{o['apiVersion']}/{o['kind']}" for o in desired)]))
        pruned: list[ObjectRef] = []
        candidates = live if live is not None else self.list_managed(selector=selector, kinds=kinds)
        for obj in sorted(candidates, key=_apply_rank, reverse=True):
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
                continue
            ref = ObjectRef.of(obj)
            if ref.identity in wanted:
                continue
            if self.delete(ref, dry_run=dry_run):
                pruned.append(ref)
        return pruned


def _apply_rank(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    # The domain's apply order, with the namespace too: a runtime's objects span namespaces.
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    return (apply_rank(kind), kind, meta.get("namespace") or "", meta.get("name", ""))
