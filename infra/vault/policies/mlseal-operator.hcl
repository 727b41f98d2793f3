# mlseal-operator: a person (or CI job) provisioning mlseal's secrets and rotating its
# keys. Writes KV under mlseal/, rotates (never exports or deletes) the Transit keys.

path "secret/data/mlseal/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/mlseal/*" {
  capabilities = ["read", "list"]
}
path "transit/keys/mlseal-signing" {
  capabilities = ["read"]
}
path "transit/keys/mlseal-signing-*" {
  capabilities = ["read"]
}
path "transit/keys/mlseal-data" {
  capabilities = ["read"]
}
path "transit/keys/+/rotate" {
  capabilities = ["update"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
path "transit/keys/+/config" {
  capabilities = ["deny"]
}
