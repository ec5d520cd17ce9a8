"""A Kubernetes API simulator for demos and tests: real HTTP, not a real cluster.

It serves namespaces, ConfigMaps, Secrets, Services, Deployments and Ingresses to the official
clients (typed APIs and ``DynamicClient``): discovery, create/get/list (label and field
selectors, ``limit``/``continue``)/replace/delete (namespaces cascade), JSON merge, strategic
merge and JSON patches, server-side apply with ``managedFields`` and conflicts, a ``status``
subresource, ``generation``, ``resourceVersion`` preconditions, ``dryRun=All`` and watch. A
kubelet loop rolls Deployments out after ``ready_delay`` seconds, or never when the pod template
carries ``FAIL_ANNOTATION: "true"`` (then the progress deadline is missed).

Faults for tests of retries: ``sim.inject_fault("PATCH", "/namespaces/shop-dev/deployments/", 409)``
answers the next matching request (method, regular expression on the path) with that status as a
Kubernetes ``Status``, ``times`` times (default once), without touching the store; ``sim.faults``
lists them with how often each fired, ``sim.clear_faults()`` disarms them (see ``faults.py``).

Not simulated: pods, ReplicaSets, finalizers and graceful deletion, admission, RBAC/authentication
(any token is accepted), TLS, OpenAPI documents, aggregated discovery, protobuf, watch bookmarks.

It imports nothing else of the product.
"""

from .faults import Fault
from .kubelet import FAIL_ANNOTATION
from .simulator import KubernetesSimulator

__all__ = ["FAIL_ANNOTATION", "Fault", "KubernetesSimulator"]
