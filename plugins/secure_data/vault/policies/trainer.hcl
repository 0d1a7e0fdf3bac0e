# secure-data: the TRAINER identity (the training DAG that consumes a hand-off package).
#
# May: unwrap (decrypt) wrapped data keys, verify signatures, read key metadata,
#      read its own storage credentials.
# May NOT: sign, create data keys, encrypt, rewrap, rotate, read the raw-dataset credentials.

path "${kv_mount}/data/${training_prefix}/*" {
  capabilities = ["read"]
}

path "${transit_mount}/decrypt/${data_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/verify/${signing_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${data_key}" {
  capabilities = ["read"]
}

path "${transit_mount}/keys/${signing_key}" {
  capabilities = ["read"]
}

# The attestation key's public key (model_signing / provenance verification); never its signing path.
path "${transit_mount}/keys/${attestation_key}" {
  capabilities = ["read"]
}

path "${transit_mount}/sign/${attestation_key}" {
  capabilities = ["deny"]
}

# Explicit deny: a trainer that could sign could forge a "sanitized" package; one that
# could create data keys could encrypt data of its own choosing. Exact paths as well as
# globs, because a grant on an exact path beats a deny on a glob (see sanitizer.hcl).
path "${transit_mount}/sign/${signing_key}" {
  capabilities = ["deny"]
}

path "${transit_mount}/sign/*" {
  capabilities = ["deny"]
}

path "${transit_mount}/datakey/plaintext/${data_key}" {
  capabilities = ["deny"]
}

path "${transit_mount}/datakey/*" {
  capabilities = ["deny"]
}

path "${transit_mount}/encrypt/*" {
  capabilities = ["deny"]
}
