"""mlseal: provable Kubeflow Pipelines.

Secrets come from Vault by reference, every artifact is signed in the OpenSSF Model
Signing format, and every step is recorded in an append-only, hash-chained,
Merkle-verifiable ledger that an admission webhook enforces at deploy time.

    >>> import mlseal
    >>> mlseal.__version__
    '0.1.0'

This module stays import-light on purpose: `mlseal digest` and other CLI commands
must start fast, so subpackages are imported only where they are used.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
