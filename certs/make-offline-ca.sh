#!/usr/bin/env bash
# Makes a CA for Cuttle with openssl, to copy into $CUTTLE_HOME/pki/ before the server's first start.
# Usage: certs/make-offline-ca.sh [OUT_DIR]   (default certs/out)
set -euo pipefail
out="${1:-$(dirname "$0")/out}"
mkdir -p "$out"; chmod 700 "$out"
openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes \
  -keyout "$out/ca.key" -out "$out/ca.crt" -subj "/O=Cuttle/CN=Cuttle CA $(hostname)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
chmod 600 "$out/ca.key"
echo "CA written to $out (copy ca.crt and ca.key to \$CUTTLE_HOME/pki/)"
openssl x509 -in "$out/ca.crt" -noout -fingerprint -sha256
