"""A Kubernetes API simulator for demos and tests: real HTTP, not a real cluster.

It serves namespaces, ConfigMaps, Secrets, Services, Deployments and Ingresses to the official
clients (typed APIs and ``DynamicClient``): discovery, create/get/list (label and field
selectors, ``limit``/``continue``)/replace/delete (namespaces cascade), JSON merge, strategic
merge and JSON patches, server-side apply with ``managedFields`` and conflicts, a ``status``
subresource, ``generation``, ``resourceVersion`` preconditions, ``dryRun=All`` and watch. A
kubelet loop rolls Deployments out after ``ready_delay`` seconds, or never when the pod template
carries ``FAIL_ANNOTATION: "true"`` (then the progress deadline is missed).

Not simulated: pods, ReplicaSets, finalizers and graceful deletion, admission, RBAC/authentication
(any token is accepted), TLS, OpenAPI documents, aggregated discovery, protobuf, watch bookmarks.

It imports nothing else of the product.
"""

from .kubelet import FAIL_ANNOTATION
from .simulator import KubernetesSimulator

__all__ = ["FAIL_ANNOTATION", "KubernetesSimulator"]
