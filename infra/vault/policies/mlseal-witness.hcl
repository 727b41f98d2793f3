# mlseal-witness: the ledger witness (CronJob mlseal-ledger-witness, `mlseal ledger
# witness`) and nobody else signs checkpoints. It may sign with mlseal-checkpoint and
# read its public half, and get short-lived ledger logins that read everything and may
# only add checkpoints (database role mlseal-ledger-witness). No record signing key,
# no KV secret, no data key.

path "transit/sign/mlseal-checkpoint" {
  capabilities = ["update"]
}
path "transit/verify/mlseal-checkpoint" {
  capabilities = ["update"]
}
path "transit/keys/mlseal-checkpoint" {
  capabilities = ["read"]
}

path "database/creds/mlseal-ledger-witness" {
  capabilities = ["read"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
path "transit/keys/+/rotate" {
  capabilities = ["deny"]
}
path "secret/data/*" {
  capabilities = ["deny"]
}
