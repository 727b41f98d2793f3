"""Run compiled KFP v2 pipelines the way the KFP v2 backend (driver + launcher on Argo)
does, without a cluster. See README.md in this directory for what is and is not modelled.

    with moto_object_store() as store:
        cluster = Cluster(object_store=store)
        result = run_pipeline(ir_yaml, {"n": 3}, cluster)
        assert result.state == "SUCCEEDED", result.logs()
"""

from tests.kfp_backend._driver import Unsupported
from tests.kfp_backend._values import BackendError
from tests.kfp_backend.cluster import (
    KUBERNETES_AUDIENCE,
    MLSEAL_VAULT_TOKEN,
    Cluster,
    LocalIssuer,
    ObjectStore,
    PodDefault,
    jwt_claims,
    moto_object_store,
)
from tests.kfp_backend.runner import RunResult, TaskResult, run_pipeline

__all__ = [
    "KUBERNETES_AUDIENCE",
    "MLSEAL_VAULT_TOKEN",
    "BackendError",
    "Cluster",
    "LocalIssuer",
    "ObjectStore",
    "PodDefault",
    "RunResult",
    "TaskResult",
    "Unsupported",
    "jwt_claims",
    "moto_object_store",
    "run_pipeline",
]
