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
