#!/usr/bin/env bash
# Writes the compose stack's secrets into DIR (default: compose/secrets; the compose file reads
# them from $WIXPRINT_SECRETS, default ./secrets), each one only if it is missing:
#   ingest-admin.token, print-admin.token, print-submit.token   bearer tokens (three different)
#   bus.key                                                     the connectivity bus's HMAC key
#   wix-private.pem / wix-public.pem                            the webhook signing key pair:
#       wix-ingest gets the public key; whoever plays Wix (compose-driver) signs with the private
#   wix-api-key                                                 the Orders API key (wix-ingest
#       sends it, fake-wix checks it)
#   compose/make-secrets.sh [DIR]
# The files the containers read are 0644 (the services run as uid 10001) inside a 0700
# directory; the private key stays 0600 (only the host uses it).
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/secrets}
mkdir -p "$dir"
chmod 700 "$dir"
command -v openssl >/dev/null 2>&1 || { echo "make-secrets.sh needs openssl" >&2; exit 1; }

random_file() { # NAME: 32 random bytes as hex
  [ -s "$dir/$1" ] || openssl rand -hex 32 > "$dir/$1"
  chmod 644 "$dir/$1"
}
random_file ingest-admin.token
random_file print-admin.token
random_file print-submit.token
random_file bus.key
random_file wix-api-key
if [ ! -s "$dir/wix-private.pem" ] || [ ! -s "$dir/wix-public.pem" ]; then
  (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/wix-private.pem" 2>/dev/null)
  openssl pkey -in "$dir/wix-private.pem" -pubout -out "$dir/wix-public.pem"
fi
chmod 600 "$dir/wix-private.pem"
chmod 644 "$dir/wix-public.pem"
echo "secrets in $dir"
