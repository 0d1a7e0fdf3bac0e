# secure-data: the KEYADMIN identity (scheduled key rotation, separate from the pipeline).
#
# May: rotate the data and signing keys, rewrap stored wrapped keys to the newest
#      version (rewrap never reveals plaintext), read key metadata.
# May NOT: decrypt, create data keys, sign, read any KV secret.

path "${transit_mount}/keys/${data_key}/rotate" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${signing_key}/rotate" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${attestation_key}/rotate" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${attestation_key}" {
  capabilities = ["read"]
}

path "${transit_mount}/rewrap/${data_key}" {
  capabilities = ["update"]
}

path "${transit_mount}/keys/${data_key}" {
  capabilities = ["read"]
}

path "${transit_mount}/keys/${signing_key}" {
  capabilities = ["read"]
}

path "${transit_mount}/decrypt/${data_key}" {
  capabilities = ["deny"]
}

path "${transit_mount}/decrypt/*" {
  capabilities = ["deny"]
}
