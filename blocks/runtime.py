"""The runtimes an environment can name in ``delivery.yaml`` (``environments.<env>.runtime``).

- :class:`~blocks.kubernetes_runtime.KubernetesRuntime`: the product reconciles the cluster itself
  (compare, server-side apply, prune; rollouts gate the health).
- :class:`~blocks.argocd_runtime.ArgoCDRuntime`: Argo CD reconciles; the product syncs the
  Application at the promoted revision and gates on its sync and health status.

The stages (:mod:`tasks.sync`, :mod:`tasks.health`, :mod:`tasks.rollback`) take either and branch on
:func:`reconciled_by_argocd`.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from blocks.argocd_runtime import ArgoCDRuntime
from blocks.kubernetes_runtime import KubernetesRuntime

Runtime = KubernetesRuntime | ArgoCDRuntime


def reconciled_by_argocd(runtime: Any) -> TypeGuard[ArgoCDRuntime]:
    """True when Argo CD applies for this runtime (the product only syncs and reads status)."""
    return isinstance(runtime, ArgoCDRuntime)


__all__ = ["ArgoCDRuntime", "KubernetesRuntime", "Runtime", "reconciled_by_argocd"]
