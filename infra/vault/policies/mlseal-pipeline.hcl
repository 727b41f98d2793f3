# mlseal-pipeline (legacy): one role and one signing key (mlseal-signing) for every stage,
# for setups without per-stage keys (AppRole in CI, older clusters). Clusters wired by
# infra/k8s use the per-stage policies mlseal-<stage> instead; the per-stage trust file
# does not trust mlseal-signing, so records it signs are not accepted there.
# What it allows, least privilege:
# read-only KV under mlseal/, sign-only with the signing key, data keys from the data
# key, nothing else. Mount names assume the defaults (secret/, transit/); bootstrap.sh
# rewrites them when MLSEAL_VAULT_KV_MOUNT / MLSEAL_VAULT_TRANSIT_MOUNT differ.

# KV v2 reads (latest or a pinned ?version=) of mlseal's secrets only. No create/update:
# pipelines never write Vault; no metadata, delete or destroy.
path "secret/data/mlseal/*" {
  capabilities = ["read"]
}

# Transit signing: sign with mlseal-signing, read its public key (never the private key).
path "transit/sign/mlseal-signing" {
  capabilities = ["update"]
}
path "transit/verify/mlseal-signing" {
  capabilities = ["update"]
}
path "transit/keys/mlseal-signing" {
  capabilities = ["read"]
}

# Envelope encryption of datasets: new data keys, and unwrapping them to decrypt.
path "transit/datakey/plaintext/mlseal-data" {
  capabilities = ["update"]
}
path "transit/decrypt/mlseal-data" {
  capabilities = ["update"]
}
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
