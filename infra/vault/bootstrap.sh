#!/usr/bin/env bash
# Bootstrap a Vault server for mlseal, through the Vault HTTP API (curl + jq only).
#
#   VAULT_ADDR=https://vault:8200 VAULT_TOKEN=<admin token> infra/vault/bootstrap.sh
#
# Idempotent (run it again after changing any file here). It:
#   1. enables KV v2 at $MLSEAL_VAULT_KV_MOUNT (default secret) and Transit at
#      $MLSEAL_VAULT_TRANSIT_MOUNT (default transit), if not already enabled;
#   2. creates the Transit keys, all non-exportable (an existing key is left as it is,
#      a key of the wrong type is an error): mlseal-signing-<stage> (ecdsa-p256) for each
#      stage kind ingest, process, train, evaluate, deploy; mlseal-data (aes256-gcm96);
#      mlseal-checkpoint (ecdsa-p256: ledger checkpoints, signed by the witness only);
#      and the legacy single key mlseal-signing (ecdsa-p256, role mlseal-pipeline);
#   3. writes the ACL policies in policies/*.hcl (mount names rewritten if not default):
#      one per stage (mlseal-<stage>: its own signing key and KV paths only), the webhook,
#      the witness (mlseal-witness: the checkpoint key only), the ledger-credential
#      syncer, the operator, the legacy pipeline;
#   4. with MLSEAL_K8S_HOST set: enables Kubernetes auth, points it at that API server
#      (CA from MLSEAL_K8S_CA_CERT, default the pod's service-account CA) and creates the
#      roles in kubernetes-roles.json (every one requires tokens with audience `vault`);
#   5. with MLSEAL_APPROLE=1: enables AppRole and creates role mlseal-pipeline (for CI);
#   6. with MLSEAL_LEDGER_PG_HOST set (plus MLSEAL_LEDGER_PG_DB, default mlseal,
#      MLSEAL_LEDGER_PG_ADMIN_USER and MLSEAL_LEDGER_PG_ADMIN_PASSWORD, read from the
#      environment, never argv): enables the database secrets engine, connects it to the
#      ledger with TLS verify-full against MLSEAL_LEDGER_PG_SSLROOTCERT (a path ON THE
#      VAULT SERVER, default /vault/userconfig/mlseal-ledger-ca/ca.crt: mount ConfigMap
#      mlseal-ledger-ca there) and creates the roles in database-roles.json:
#      mlseal-ledger-writer, mlseal-ledger-reader and mlseal-ledger-witness, short-lived
#      logins that are members of the group roles `mlseal ledger init` grants (docs/infra.md);
#   7. with MLSEAL_PUBLIC_KEYS_OUT=DIR: writes each stage key's public half to
#      DIR/<stage>.pub.pem and the checkpoint key's to DIR/checkpoint.pub.pem, for the
#      trust file (infra/k8s/base/config).
# Honours VAULT_CACERT and VAULT_NAMESPACE. The admin token is sent only as a header,
# read by curl from a file descriptor so that it never appears in a process list.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${VAULT_ADDR:?set VAULT_ADDR}"
: "${VAULT_TOKEN:?set VAULT_TOKEN to an admin token}"
kv="${MLSEAL_VAULT_KV_MOUNT:-secret}"
transit="${MLSEAL_VAULT_TRANSIT_MOUNT:-transit}"

curl_opts=(--silent --show-error --max-time 30)
[[ -n "${VAULT_CACERT:-}" ]] && curl_opts+=(--cacert "$VAULT_CACERT")
[[ -n "${VAULT_NAMESPACE:-}" ]] && curl_opts+=(-H "X-Vault-Namespace: $VAULT_NAMESPACE")

# vault METHOD PATH [JSON] [ALLOWED_ERROR_SUBSTRING] -> body on stdout; fails on non-2xx.
# The JSON body goes through stdin, never curl's argv (it may carry a password).
vault() {
  local method="$1" path="$2" body="${3:-}" allowed="${4:-}" out status
  out="$(mktemp)"
  status="$(curl "${curl_opts[@]}" -o "$out" -w '%{http_code}' -X "$method" \
    -H @<(printf 'X-Vault-Token: %s\n' "$VAULT_TOKEN") -H "Content-Type: application/json" \
    ${body:+--data-binary @-} "$VAULT_ADDR/v1/$path" <<<"$body")" || { rm -f "$out"; echo "bootstrap: cannot reach $VAULT_ADDR" >&2; return 1; }
  if [[ "$status" != 2* ]]; then
    if [[ -n "$allowed" ]] && grep -q "$allowed" "$out"; then rm -f "$out"; return 0; fi
    echo "bootstrap: $method $path -> HTTP $status: $(jq -c '.errors // .' "$out" 2>/dev/null || cat "$out")" >&2
    rm -f "$out"
    return 1
  fi
  cat "$out"
  rm -f "$out"
}

say() { echo "bootstrap: $*" >&2; }

say "KV v2 at $kv/, Transit at $transit/"
vault POST "sys/mounts/$kv" '{"type":"kv","options":{"version":"2"},"description":"mlseal secrets"}' "already in use" >/dev/null
vault POST "sys/mounts/$transit" '{"type":"transit","description":"mlseal keys"}' "already in use" >/dev/null

stages=(ingest process train evaluate deploy)
keys=(mlseal-data:aes256-gcm96 mlseal-signing:ecdsa-p256 mlseal-checkpoint:ecdsa-p256)
for stage in "${stages[@]}"; do keys+=("mlseal-signing-$stage:ecdsa-p256"); done
say "Transit keys: ${keys[*]} (not exportable)"
for key in "${keys[@]}"; do
  vault POST "$transit/keys/${key%%:*}" "$(jq -cn --arg t "${key#*:}" '{type: $t, exportable: false}')" >/dev/null
done
for key in "${keys[@]}"; do
  name="${key%%:*}" want="${key#*:}"
  info="$(vault GET "$transit/keys/$name")"
  got="$(jq -r .data.type <<<"$info")"
  [[ "$got" == "$want" ]] || { say "ERROR: $transit/keys/$name exists with type $got, expected $want"; exit 1; }
  [[ "$(jq -r .data.exportable <<<"$info")" == "false" ]] || say "WARNING: $transit/keys/$name is exportable"
done

for file in "$here"/policies/*.hcl; do
  name="$(basename "$file" .hcl)"
  say "policy $name"
  text="$(sed -e "s#\"secret/#\"$kv/#g" -e "s#\"transit/#\"$transit/#g" "$file")"
  vault PUT "sys/policies/acl/$name" "$(jq -n --arg p "$text" '{policy: $p}')" >/dev/null
done

if [[ -n "${MLSEAL_K8S_HOST:-}" ]]; then
  k8s_mount="${MLSEAL_VAULT_K8S_MOUNT:-kubernetes}"
  ca="${MLSEAL_K8S_CA_CERT:-/var/run/secrets/kubernetes.io/serviceaccount/ca.crt}"
  say "Kubernetes auth at auth/$k8s_mount -> $MLSEAL_K8S_HOST"
  vault POST "sys/auth/$k8s_mount" '{"type":"kubernetes"}' "already in use" >/dev/null
  config="$(jq -n --arg host "$MLSEAL_K8S_HOST" '{kubernetes_host: $host}')"
  if [[ -r "$ca" ]]; then config="$(jq --rawfile ca "$ca" '. + {kubernetes_ca_cert: $ca}' <<<"$config")"; fi
  vault POST "auth/$k8s_mount/config" "$config" >/dev/null
  for role in $(jq -r 'keys[]' "$here/kubernetes-roles.json"); do
    say "Kubernetes role $role"
    vault POST "auth/$k8s_mount/role/$role" "$(jq -c --arg r "$role" '.[$r]' "$here/kubernetes-roles.json")" >/dev/null
  done
fi

if [[ "${MLSEAL_APPROLE:-0}" == "1" ]]; then
  say "AppRole auth at auth/approle, role mlseal-pipeline"
  vault POST "sys/auth/approle" '{"type":"approle"}' "already in use" >/dev/null
  vault POST "auth/approle/role/mlseal-pipeline" \
    '{"token_policies":["mlseal-pipeline"],"token_ttl":"20m","token_max_ttl":"2h","secret_id_ttl":"24h"}' >/dev/null
fi

if [[ -n "${MLSEAL_LEDGER_PG_HOST:-}" ]]; then
  : "${MLSEAL_LEDGER_PG_ADMIN_USER:?set MLSEAL_LEDGER_PG_ADMIN_USER}"
  : "${MLSEAL_LEDGER_PG_ADMIN_PASSWORD:?set MLSEAL_LEDGER_PG_ADMIN_PASSWORD}"
  # jq reads the credential from its environment (env.*), never from its argv
  export MLSEAL_LEDGER_PG_ADMIN_USER MLSEAL_LEDGER_PG_ADMIN_PASSWORD
  db="${MLSEAL_LEDGER_PG_DB:-mlseal}"
  rootcert="${MLSEAL_LEDGER_PG_SSLROOTCERT:-/vault/userconfig/mlseal-ledger-ca/ca.crt}"
  host="$MLSEAL_LEDGER_PG_HOST"
  [[ "$host" == *:* ]] || host="$host:5432"
  say "database secrets engine at database/: ledger $host/$db (TLS verify-full, CA $rootcert on the Vault server)"
  vault POST "sys/mounts/database" '{"type":"database","description":"mlseal ledger logins"}' "already in use" >/dev/null
  vault POST "database/config/mlseal-ledger" "$(jq -n \
    --arg url "postgresql://{{username}}:{{password}}@$host/$db?sslmode=verify-full&sslrootcert=$rootcert" \
    --argjson roles "$(jq -c 'keys' "$here/database-roles.json")" \
    '{plugin_name:"postgresql-database-plugin", connection_url:$url,
      username:env.MLSEAL_LEDGER_PG_ADMIN_USER, password:env.MLSEAL_LEDGER_PG_ADMIN_PASSWORD,
      password_authentication:"scram-sha-256", allowed_roles:$roles}')" >/dev/null
  for role in $(jq -r 'keys[]' "$here/database-roles.json"); do
    say "database role $role"
    vault POST "database/roles/$role" "$(jq -c --arg r "$role" '.[$r]' "$here/database-roles.json")" >/dev/null
  done
fi

if [[ -n "${MLSEAL_PUBLIC_KEYS_OUT:-}" ]]; then
  mkdir -p "$MLSEAL_PUBLIC_KEYS_OUT"
  for pair in "${stages[@]/#/mlseal-signing-}" mlseal-checkpoint; do
    name="${pair}" file="${pair#mlseal-signing-}"
    [[ "$name" == mlseal-checkpoint ]] && file=checkpoint
    info="$(vault GET "$transit/keys/$name")"
    latest="$(jq -r '.data.latest_version' <<<"$info")"
    jq -r --arg v "$latest" '.data.keys[$v].public_key' <<<"$info" >"$MLSEAL_PUBLIC_KEYS_OUT/$file.pub.pem"
    say "public key of $name (version $latest) -> $MLSEAL_PUBLIC_KEYS_OUT/$file.pub.pem"
  done
fi

say "done: run 'mlseal vault check' with a pipeline token to confirm"
