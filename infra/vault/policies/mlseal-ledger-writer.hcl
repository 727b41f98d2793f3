# mlseal-ledger-writer: Vault Secrets Operator in a pipeline namespace (Kubernetes auth
# role mlseal-ledger-credentials) fetching the short-lived ledger login that tasks use
# (Secret mlseal-ledger-writer). Nothing else: no KV, no Transit.
path "database/creds/mlseal-ledger-writer" {
  capabilities = ["read"]
}
