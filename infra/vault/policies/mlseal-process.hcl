# mlseal-process: what a sealed KFP task of stage kind `process` may do (Kubernetes auth role
# mlseal-process). Least privilege: read-only KV for its own components, sign with its own
# Transit key only. Mount names assume the defaults (secret/, transit/); bootstrap.sh
# rewrites them when MLSEAL_VAULT_KV_MOUNT / MLSEAL_VAULT_TRANSIT_MOUNT differ.

# KV v2 reads of the secrets of this stage's components (anonymize, encrypt, validate); no writes,
# no metadata, no delete.
path "secret/data/mlseal/anonymize/*" {
  capabilities = ["read"]
}
path "secret/data/mlseal/encrypt/*" {
  capabilities = ["read"]
}
path "secret/data/mlseal/validate/*" {
  capabilities = ["read"]
}

# Sign with mlseal-signing-process and read its public half; every other signing key is
# out of reach (no glob), so this stage cannot sign another stage's records.
path "transit/sign/mlseal-signing-process" {
  capabilities = ["update"]
}
path "transit/verify/mlseal-signing-process" {
  capabilities = ["update"]
}
path "transit/keys/mlseal-signing-process" {
  capabilities = ["read"]
}

# Envelope encryption of datasets: new data keys, and unwrapping them to decrypt.
path "transit/datakey/plaintext/mlseal-data" {
  capabilities = ["update"]
}
path "transit/decrypt/mlseal-data" {
  capabilities = ["update"]
}
# its type and versions (mlseal checks the key is an AES-GCM key before using it)
path "transit/keys/mlseal-data" {
  capabilities = ["read"]
}

# Never export key material, even if a key was (wrongly) created exportable.
path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
