# mlseal-ingest: what a sealed KFP task of stage kind `ingest` may do (Kubernetes auth role
# mlseal-ingest). Least privilege: read-only KV for its own components, sign with its own
# Transit key only. Mount names assume the defaults (secret/, transit/); bootstrap.sh
# rewrites them when MLSEAL_VAULT_KV_MOUNT / MLSEAL_VAULT_TRANSIT_MOUNT differ.

# KV v2 reads of the secrets of this stage's components (ingest); no writes,
# no metadata, no delete.
path "secret/data/mlseal/ingest/*" {
  capabilities = ["read"]
}

# Sign with mlseal-signing-ingest and read its public half; every other signing key is
# out of reach (no glob), so this stage cannot sign another stage's records.
path "transit/sign/mlseal-signing-ingest" {
  capabilities = ["update"]
}
path "transit/verify/mlseal-signing-ingest" {
  capabilities = ["update"]
}
path "transit/keys/mlseal-signing-ingest" {
  capabilities = ["read"]
}

# Never export key material, even if a key was (wrongly) created exportable.
path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
