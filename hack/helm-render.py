#!/usr/bin/env python3
"""Lints and renders a chart with Helm's own Go SDK (helm-python-sdk), no helm binary needed.

usage: helm-render.py CHART_DIR VALUES_FILE RELEASE NAMESPACE
Prints JSON: {"lint": <helm lint report>, "manifests": {template path: rendered YAML}}.
"""
import json
import sys

import helm_python as helm


def main() -> int:
    chart_dir, values_file, release, namespace = sys.argv[1:5]
    with open(values_file, encoding="utf-8") as handle:
        values = helm.values_from_yaml(handle.read())
    report = helm.lint(chart_dir, values, strict=True, namespace=namespace)
    chart = helm.Chart.load(chart_dir)
    chart.validate_schema(values)
    manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
    json.dump({"lint": report, "manifests": manifests}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
