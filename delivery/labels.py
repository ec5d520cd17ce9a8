"""Labels and annotations the product puts on what it manages."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "gitops-delivery"
APP_LABEL = "app.kubernetes.io/name"
ENVIRONMENT_LABEL = "delivery.gitops/environment"
RELEASE_ID_ANNOTATION = "delivery.gitops/release-id"
TRACE_ID_ANNOTATION = "delivery.gitops/trace-id"
FIELD_MANAGER = "gitops-delivery"


def managed_selector(*, app: str | None = None, environment: str | None = None) -> str:
    """The label selector of what the product manages, optionally narrowed to an app and environment."""
    parts = [f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"]
    if app:
        parts.append(f"{APP_LABEL}={app}")
    if environment:
        parts.append(f"{ENVIRONMENT_LABEL}={environment}")
    return ",".join(parts)
