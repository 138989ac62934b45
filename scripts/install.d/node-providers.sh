#!/usr/bin/env bash
# Installs the npm packages the provider webhook tests sign and verify with (GitHub's
# @octokit/webhooks-methods), into tests/node-providers/node_modules, from its lockfile.
# Without npm it does nothing: those tests then skip, saying why.
# Idempotent: nothing is installed when node_modules already matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/../../tests/node-providers"

if ! command -v npm >/dev/null 2>&1; then
  exit 0
fi
# npm writes its own copy of the lockfile into node_modules; equal means already installed.
if [ -f node_modules/.package-lock.json ] \
  && [ node_modules/.package-lock.json -nt package-lock.json ] \
  && [ -f node_modules/@octokit/webhooks-methods/package.json ]; then
  exit 0
fi
echo "node-providers: installing tests/node-providers packages" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
