"""Fixtures: a fresh simulator per test and the official Kubernetes clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config, dynamic

from kube_simulator import KubernetesSimulator


@pytest.fixture
def sim() -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(ready_delay=0.2) as simulator:
        yield simulator


@pytest.fixture
def api(sim: KubernetesSimulator, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(sim.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def net(api: client.ApiClient) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api)


@pytest.fixture
def dyn(api: client.ApiClient, tmp_path: Path) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    core.create_namespace({"metadata": {"name": "team"}})
    return "team"
