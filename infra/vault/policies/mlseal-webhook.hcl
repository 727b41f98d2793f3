# mlseal-webhook: the admission webhook only verifies. It reads the signing key's public
# half and may ask Transit to verify; it cannot sign, read KV secrets or get data keys.

path "transit/keys/mlseal-signing" {
  capabilities = ["read"]
}
path "transit/verify/mlseal-signing" {
  capabilities = ["update"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/sign/*" {
  capabilities = ["deny"]
}
path "secret/data/*" {
  capabilities = ["deny"]
}

# The ledger DSN: short-lived, read-only PostgreSQL credentials from the database
# secrets engine (role mlseal-ledger-reader; SELECT on the ledger tables only), rendered
# by Vault Agent into the webhook pod (infra/k8s/webhook-deployment.yaml).
path "database/creds/mlseal-ledger-reader" {
  capabilities = ["read"]
}
