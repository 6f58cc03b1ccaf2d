#!/usr/bin/env bash
# Creates .venv-sdk with Alibaba's published ECI SDKs (pinned), for the SDK fidelity test, and
# helm-python-sdk (Helm's own Go SDK, no helm binary), for the chart tests.
# Prints the interpreter path to export as VK_ECI_SDK_PYTHON.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-sdk"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  alibabacloud-eci20180808==2.1.0 alibabacloud-tea-openapi==0.4.6 \
  aliyun-python-sdk-eci==1.3.3 aliyun-python-sdk-core==2.16.1 \
  helm-python-sdk==0.2.2 >&2
echo "$venv/bin/python"
