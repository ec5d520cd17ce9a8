"""infra/kubernetes-work-pool.json against the Kubernetes worker it is for (prefect-kubernetes 0.8).

No Prefect server and no cluster: the template is checked with the functions Prefect itself runs on
it. ``prefect work-pool create`` and the server validate a base job template with
``validate_base_job_template`` (every placeholder names a declared variable) and
``validate_job_variable_defaults_for_work_pool`` (the variables are a valid JSON schema and every
default conforms; its database session is only read for block references, which this template has
none of); a worker renders it with ``KubernetesWorkerJobConfiguration.from_template_and_values`` and
``prepare_for_flow_run``. Each check is also shown failing on a template broken on purpose.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi import HTTPException
from prefect.client.schemas.objects import FlowRun
from prefect.server.api.validation import validate_job_variable_defaults_for_work_pool
from prefect.server.schemas.actions import WorkPoolCreate, validate_base_job_template
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_URL,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
    temporary_settings,
)
from prefect.utilities.schema_tools import ValidationError, is_valid_schema, validate
from prefect.utilities.templating import find_placeholders
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration
from pydantic import ValidationError as PydanticValidationError

from delivery.settings import HEARTBEAT_SECONDS, LEDGER_ENV

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "infra" / "kubernetes-work-pool.json"
# Environment variables whose values are secrets: the job gets them from a Kubernetes secret, never as text.
SECRET_ENV = {"PREFECT_API_AUTH_STRING": "prefect-api-auth-string", LEDGER_ENV: "delivery-ledger-url"}
# Secrets a worker may hold that must not reach a job at all.
WORKER_ONLY_ENV = ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_SERVER_DATABASE_CONNECTION_URL",
                   "PREFECT_SERVER_DATABASE_PASSWORD")
CREDENTIAL_IN_URL = re.compile(r"://[^/\s:@]+:[^@\s/]+@")


def run(coroutine: Any) -> Any:
    """Run a coroutine on a loop of its own: ``asyncio.run`` would unset the main thread's event loop, which
    later tests (Pulumi's mocks in test_platform.py) still use."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def load() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text())


def default_template() -> dict[str, Any]:
    return KubernetesWorker.get_default_base_job_template()


# --------------------------------------------------------------------------- the checks


def shape_problems(template: dict[str, Any]) -> list[str]:
    """The Prefect shape: exactly ``job_configuration`` and ``variables``, the worker's configuration keys."""
    problems = []
    if set(template) != {"job_configuration", "variables"}:
        problems.append(f"top-level keys {sorted(template)}, not ['job_configuration', 'variables']")
    expected = set(default_template()["job_configuration"])
    found = set(template.get("job_configuration", {}))
    if found != expected:
        problems.append(f"job_configuration keys: missing {sorted(expected - found)}, extra {sorted(found - expected)}")
    if template.get("variables", {}).get("type") != "object":
        problems.append("variables is not an object schema")
    return problems


def undeclared_placeholders(template: dict[str, Any]) -> set[str]:
    """Placeholders in ``job_configuration`` that no variable declares."""
    used = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    return used - set(template["variables"].get("properties", {}))


def schema_problems(template: dict[str, Any]) -> list[str]:
    """The variables section as a JSON schema: valid itself (jsonschema's meta-schema and Prefect's
    validator), and every default valid against its own property."""
    variables = template["variables"]
    problems = []
    try:
        jsonschema.validators.validator_for(variables, default=jsonschema.Draft202012Validator).check_schema(variables)
    except jsonschema.SchemaError as exc:
        problems.append(f"jsonschema: {exc.message}")
    try:
        is_valid_schema(variables, preprocess=False)
    except ValueError as exc:
        problems.append(f"prefect: {exc}")
    if problems:
        return problems
    for name, prop in variables.get("properties", {}).items():
        if "default" in prop:
            errors = validate({name: prop["default"]}, variables, preprocess=False, ignore_required=True)
            problems.extend(f"default of {name}: {error.message}" for error in errors)
    return problems


def server_refusal(template: dict[str, Any]) -> str | None:
    """What Prefect's server says creating a work pool with this template (None: it accepts it)."""
    try:
        validate_base_job_template(template)
        WorkPoolCreate(name="delivery-k8s", type="kubernetes", base_job_template=template)
        run(validate_job_variable_defaults_for_work_pool(None, "delivery-k8s", template))
    except (ValueError, PydanticValidationError) as exc:
        return str(exc)
    except HTTPException as exc:
        return str(exc.detail)
    return None


class NoClient:
    """Stands in for the Prefect client: this template references no block or variable, so none is read."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering the template used the Prefect client ({name})")


def render(template: dict[str, Any], values: dict[str, Any] | None = None) -> KubernetesWorkerJobConfiguration:
    """The job configuration a worker builds from the template and a deployment's job variables."""
    return run(KubernetesWorkerJobConfiguration.from_template_and_values(template, values or {}, client=NoClient()))


def prepared_manifest(template: dict[str, Any], values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Job manifest the worker submits for a flow run, after it added its own environment."""
    configuration = render(template, values)
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="brave-otter", flow_id=uuid.uuid4()))
    return configuration.job_manifest


def container_env(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}


def leaks(manifest: dict[str, Any], secrets: list[str]) -> list[str]:
    """Secret values written into the manifest as text, and secret variables not taken from a Kubernetes secret."""
    text = json.dumps(manifest)
    found = [f"literal secret {secret[:4]}..." for secret in secrets if secret in text]
    env = container_env(manifest)
    found += [f"{name} is not from a secret" for name in SECRET_ENV if name in env and "valueFrom" not in env[name]]
    found += [f"{name} reaches the job" for name in WORKER_ONLY_ENV if name in env]
    found += ["a URL with a password" for _ in CREDENTIAL_IN_URL.finditer(text)]
    return found


def worker_holding_secrets():
    """The settings of a worker that talks to an authenticated server and runs beside it."""
    return temporary_settings(updates={
        PREFECT_API_URL: "https://prefect.example.com/api",
        PREFECT_API_AUTH_STRING: "delivery:worker-credential-123",
        PREFECT_SERVER_DATABASE_CONNECTION_URL: "postgresql+asyncpg://prefect:db-password-456@db/prefect",
    })


WORKER_SECRETS = ["delivery:worker-credential-123", "db-password-456"]


# --------------------------------------------------------------------------- the template passes


def test_the_template_has_the_kubernetes_workers_shape():
    assert shape_problems(load()) == []


def test_every_placeholder_names_a_declared_variable():
    template = load()
    assert undeclared_placeholders(template) == set()
    # the product's own variables are used, not only declared
    used = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    assert {"credentials_secret", "result_storage_block", "image", "namespace", "cpu_request",
            "memory_request"} <= used


def test_the_variables_are_a_valid_json_schema_with_valid_defaults():
    assert schema_problems(load()) == []


def test_prefects_server_accepts_it_as_a_work_pools_base_job_template():
    assert server_refusal(load()) is None


def test_defaults_render_a_job_for_the_product():
    configuration = render(load())
    assert configuration.namespace == "delivery"
    manifest = prepared_manifest(load())
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert manifest["metadata"]["namespace"] == "delivery"
    assert container["image"] == "gitops-delivery:0.1.0"
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    env = container_env(manifest)
    for name, key in SECRET_ENV.items():
        assert env[name] == {"name": name,
                             "valueFrom": {"secretKeyRef": {"name": "delivery-credentials", "key": key}}}
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]["value"] == "remote-file-system/delivery-results"
    # recovery reads a silence longer than HEARTBEAT_SECONDS as a dead run (flows/release_runs.py)
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]["value"] == str(HEARTBEAT_SECONDS)
    assert env["PREFECT__FLOW_RUN_ID"]["value"]  # the worker's own variables are still added


def test_a_deployments_job_variables_override_the_defaults_and_keep_the_products_env():
    manifest = prepared_manifest(load(), {"namespace": "team-a", "image": "registry.example.com/gitops-delivery:2",
                                          "credentials_secret": "team-a-delivery", "cpu_request": "2",
                                          "env": {"DELIVERY_ALERT_WEBHOOK_URL": "https://hooks.example.com/x"}})
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = container_env(manifest)
    assert manifest["metadata"]["namespace"] == "team-a"
    assert container["image"] == "registry.example.com/gitops-delivery:2"
    assert container["resources"]["requests"]["cpu"] == "2"
    assert env["DELIVERY_ALERT_WEBHOOK_URL"]["value"] == "https://hooks.example.com/x"
    assert env[LEDGER_ENV]["valueFrom"]["secretKeyRef"]["name"] == "team-a-delivery"
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]["value"] == str(HEARTBEAT_SECONDS)


def test_the_template_holds_no_secret_and_the_job_gets_none_of_the_workers():
    assert not CREDENTIAL_IN_URL.search(TEMPLATE_PATH.read_text())
    with worker_holding_secrets():
        manifest = prepared_manifest(load())
    assert leaks(manifest, WORKER_SECRETS) == []
    assert container_env(manifest)["PREFECT_API_URL"]["value"] == "https://prefect.example.com/api"


# --------------------------------------------------------------------------- the checks fail when they should


def test_an_undeclared_placeholder_is_caught_though_rendering_would_silently_drop_it():
    broken = load()
    broken["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["priorityClassName"] = "{{ priority }}"
    assert undeclared_placeholders(broken) == {"priority"}
    assert "undeclared variable(s): priority" in server_refusal(broken)
    # what the checks protect against: the worker renders it anyway, without the field
    assert "priorityClassName" not in render(broken).job_manifest["spec"]["template"]["spec"]


def test_a_variable_with_a_wrong_type_is_caught():
    misspelt = load()
    misspelt["variables"]["properties"]["credentials_secret"]["type"] = "text"
    assert any("jsonschema" in p for p in schema_problems(misspelt))
    assert any("prefect" in p for p in schema_problems(misspelt))
    assert "Invalid schema" in server_refusal(misspelt)

    wrong_default = load()
    wrong_default["variables"]["properties"]["backoff_limit"]["default"] = "zero"
    assert schema_problems(wrong_default) == ["default of backoff_limit: 'zero' is not of type 'integer'"]
    assert "backoff_limit" in server_refusal(wrong_default)

    with pytest.raises(ValidationError, match="cpu_request"):
        validate({"cpu_request": 2}, load()["variables"], raise_on_error=True, ignore_required=True)
    with pytest.raises(ValidationError, match="credentials_secret"):
        validate({"credentials_secret": "Not_A_Secret_Name"}, load()["variables"], raise_on_error=True,
                 ignore_required=True)


def test_job_configuration_keys_other_than_the_workers_are_caught():
    extra = load()
    extra["job_configuration"]["image"] = "{{ image }}"
    del extra["job_configuration"]["stream_output"]
    assert shape_problems(extra) == ["job_configuration keys: missing ['stream_output'], extra ['image']"]
    assert shape_problems({"job_configuration": load()["job_configuration"]}) != []


def test_a_manifest_the_worker_refuses_is_caught():
    broken = load()
    broken["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(PydanticValidationError, match="restartPolicy must have value 'Never'"):
        render(broken)


def test_the_leak_check_catches_the_workers_default_template_copying_its_secrets():
    with worker_holding_secrets():
        manifest = prepared_manifest(default_template())
    found = leaks(manifest, WORKER_SECRETS)
    assert "PREFECT_API_AUTH_STRING is not from a secret" in found
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL reaches the job" in found
    assert len([f for f in found if f.startswith("literal secret")]) == 2

    literal = load()
    literal["job_configuration"]["env"][LEDGER_ENV] = "postgresql+psycopg://delivery:pw@db/ledger"
    assert f"{LEDGER_ENV} is not from a secret" in leaks(prepared_manifest(literal), [])
    assert "a URL with a password" in leaks(prepared_manifest(literal), [])

