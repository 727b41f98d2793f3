"""Exports in the ecosystem's formats, built from the ledger's verified records only.

- `mlseal.export.slsa`: SLSA Provenance v1 for a model (in-toto Statement v1, DSSE-signed);
- `mlseal.export.mlbom`: a CycloneDX 1.6 ML-BOM for a model (model card, datasets);
- `mlseal.export.openlineage`: one OpenLineage RunEvent per stage run;
- `mlseal.export.pack`: one file an auditor takes away, checked by `verify_pack` offline.

Every export reads the ledger through `mlseal.export._source` (a verified view, the
trusted-record rule); an unknown digest, an untrusted or tampered record, or a broken
lineage is refused (`ExportRefused`, a `VerificationError`) and nothing is written.
See docs/export.md.
"""

from mlseal.export._source import ExportRefused, ModelSource, load_model

__all__ = ["ExportRefused", "ModelSource", "load_model"]
