#!/usr/bin/env bash
# Installs the npm signing libraries the interoperability tests sign with (jose, jsonwebtoken;
# svix, standardwebhooks), into tests/node-signers/node_modules, from its lockfile. scripts/test
# runs it with the other scripts/install.d/*.sh. Without npm it does nothing: those tests then skip, saying why.
# Idempotent: nothing is installed when node_modules already matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/../../tests/node-signers"

if ! command -v npm >/dev/null 2>&1; then
  exit 0
fi
# npm writes its own copy of the lockfile into node_modules; newer means already installed.
if [ -f node_modules/.package-lock.json ] \
  && [ node_modules/.package-lock.json -nt package-lock.json ] \
  && [ -f node_modules/jose/package.json ] \
  && [ -f node_modules/jsonwebtoken/package.json ] \
  && [ -f node_modules/svix/package.json ] \
  && [ -f node_modules/standardwebhooks/package.json ]; then
  exit 0
fi
echo "node-signers: installing tests/node-signers packages" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
