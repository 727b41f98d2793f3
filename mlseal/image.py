"""The one image reference mlseal's components and webhook run in, derived from the version.

`infra/docker/Dockerfile` builds it and `infra/k8s` deploys it under this name; a test
keeps all three in step.
"""

from mlseal import __version__

__all__ = ["IMAGE", "IMAGE_REPOSITORY"]

IMAGE_REPOSITORY = "ghcr.io/mlseal/mlseal-python"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
