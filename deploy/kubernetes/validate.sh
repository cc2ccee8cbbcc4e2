#!/usr/bin/env bash
# Validates every manifest here offline (no cluster) against the
# Kubernetes API schemas that the kubernetes-validate package ships,
# strictly (an unknown field is an error). The snapshot kinds are CRDs it
# has no schema for: they are parsed and reported as warnings only.
set -euo pipefail
cd "$(dirname "$0")"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33.0}"
kubernetes-validate --strict -k "$KUBERNETES_VERSION" "$@" ./*.yaml example/*.yaml
