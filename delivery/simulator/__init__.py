"""A Kubernetes API simulator for demos and tests. It imports nothing else of the product."""

from .kubelet import FAIL_ANNOTATION
from .simulator import KubernetesSimulator

__all__ = ["FAIL_ANNOTATION", "KubernetesSimulator"]
