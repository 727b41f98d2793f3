"""Pure data and model library behind mlseal's pipeline components.

Nothing here talks to Vault, the ledger or KFP: keys, connection strings and paths are
passed in by the caller (who got them from a `Secret`), and every function returns a
value plus a report that holds counts, column names and methods — never the data, and
never key bytes.

Modules:

- `mlseal.ml.table`: `Table` (columns of numpy arrays) and `Schema`.
- `mlseal.ml.data`: the demo dataset, CSV read/write, reading from a path, URL or
  PostgreSQL table, and a seeded stratified split.
- `mlseal.ml.anonymize`: keyed HMAC-SHA256 pseudonyms, PII redaction, column drops.
- `mlseal.ml.crypto`: AES-256-GCM envelope for a dataset file's bytes.
- `mlseal.ml.validate`: schema and poisoning checks against a reference.
- `mlseal.ml.train`: standardisation + logistic regression, optional FGSM adversarial
  training, JSON (never pickle) model files.
- `mlseal.ml.evaluate`: accuracy, F1, ROC AUC, robust accuracy (FGSM, PGD), membership
  inference advantage, and metric gates.

    >>> from mlseal.ml import data
    >>> table = data.make_demo_dataset(rows=50, seed=1)
    >>> table.n_rows
    50
"""

__all__: list[str] = []  # a namespace: import from the modules listed above
