# mlseal-webhook: the admission webhook only verifies. It may read the stage signing
# keys' public halves and ask Transit to verify; it cannot sign, read KV secrets or get
# data keys.

path "transit/keys/mlseal-signing-*" {
  capabilities = ["read"]
}
path "transit/verify/mlseal-signing-*" {
  capabilities = ["update"]
}
# the single signing key of the legacy mlseal-pipeline role
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
path "transit/keys/+/rotate" {
  capabilities = ["deny"]
}
path "secret/data/*" {
  capabilities = ["deny"]
}

# The ledger DSN: short-lived, read-only PostgreSQL logins from the database secrets
# engine (role mlseal-ledger-reader: member of mlseal_ledger_reader, SELECT only),
# rendered by Vault Agent into the webhook pod (infra/k8s/base/deployment.yaml).
path "database/creds/mlseal-ledger-reader" {
  capabilities = ["read"]
}
