# secure-data: the SANITIZER identity (preflight, integrity, poisoning, anonymize, hand-off).
#
# May: read dataset storage credentials, create data keys (plaintext + wrapped),
#      sign with the ed25519 signing key, verify its own signatures, rewrap (no plaintext),
#      read key metadata (type, versions) for the preflight.
# May NOT: decrypt/unwrap, rotate keys, read the trainer's secrets. Anything not listed is denied.
#
# This is a template: setup.py substitutes ${kv_mount}, ${transit_mount}, ${data_key},
# ${signing_key}, ${dataset_prefix} (defaults: secret, transit, secure-data-datakey,
# secure-data-signing, secure-data/datasets). Render it with
#   python -m secure_data.vault.setup --render-policies DIR

path "${kv_mount}/data/${dataset_prefix}/*" {
  capabilities = ["read"]
}

path "${transit_mount}/datakey/plaintext/${data_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/rewrap/${data_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/sign/${signing_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/verify/${signing_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${data_key}" {
  capabilities = ["read"]
}

# The ECDSA attestation key: model_signing signature of each package and the run's provenance statement.
path "${transit_mount}/sign/${attestation_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${attestation_key}" {
  capabilities = ["read"]
}

path "${transit_mount}/keys/${signing_key}" {
  capabilities = ["read"]
}

# Explicit deny: the sanitizer must never turn a wrapped key back into plaintext, even if
# someone attaches a broader policy to this identity. Vault applies the MOST SPECIFIC path
# rule, and "deny" only wins over a grant on the SAME path, so the exact key path is
# denied as well as the glob.
path "${transit_mount}/decrypt/${data_key}" {
  capabilities = ["deny"]
}

path "${transit_mount}/decrypt/*" {
  capabilities = ["deny"]
}

path "${transit_mount}/datakey/wrapped/*" {
  capabilities = ["deny"]
}
