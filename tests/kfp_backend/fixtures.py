"""pytest fixtures for the KFP backend harness; a test module loads them with

    pytest_plugins = ["tests.kfp_backend.fixtures"]

- ``object_store``: moto's S3 server on 127.0.0.1, one per test session;
- ``kfp_cluster``: a fresh `Cluster` (namespace ``kubeflow``, service account
  ``pipeline-runner``, the mlseal Vault-token PodDefault, a fresh bucket as pipeline root).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kfp_backend.cluster import Cluster, ObjectStore, moto_object_store


@pytest.fixture(scope="session")
def object_store() -> Iterator[ObjectStore]:
    with moto_object_store() as store:
        yield store


@pytest.fixture
def kfp_cluster(object_store: ObjectStore) -> Cluster:
    return Cluster(object_store=object_store)
