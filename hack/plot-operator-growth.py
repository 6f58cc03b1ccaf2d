"""How the operator's RSS, idle CPU, idle ECI calls and status lag grow with the pods on one
virtual node: reads hack/results/bench-operator-<PODS>.json (what hack/bench-operator.sh
writes) and draws hack/results/bench-operator-growth.png, with design §8's targets.

    python hack/plot-operator-growth.py      (needs matplotlib: pip install matplotlib)
"""

import json
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# (pods, target) pairs of design §8, drawn as steps.
TARGETS = {
    "rss": [(10_000, 64), (50_000, 192)],
    "cpu": [(10_000, 0.05), (50_000, 0.2)],
    "lag": [(10_000, 1.0), (50_000, 2.0)],
}


def runs():
    """Total pods on the node → that run's figures, for the runs with the image's malloc
    settings (the files with a suffix are variants, not points of the curve)."""
    points = {}
    for path in RESULTS.glob("bench-operator-*.json"):
        if not re.fullmatch(r"bench-operator-\d+\.json", path.name):
            continue
        run = json.loads(path.read_text())
        preloaded = run.get("preloaded", {}).get("pods", 0)
        points[run["pods"] + preloaded] = run
    return dict(sorted(points.items()))


def main():
    points = runs()
    pods = list(points)
    figures = [
        ("rss", "operator RSS, idle (MiB)",
         [points[n]["operator_rss_mib"]["idle"] for n in pods]),
        ("cpu", "operator CPU, idle (cores)",
         [points[n]["operator_idle_cpu_cores"] for n in pods]),
        ("calls", "ECI calls per minute, idle",
         [points[n]["eci_calls_per_minute_idle"] for n in pods]),
        ("lag", "ECI status change → pod seen Running, p99 (s)",
         [points[n].get("group_running_to_pod_running_seconds", {}).get("p99") for n in pods]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for axis, (key, title, values) in zip(axes.flat, figures):
        measured = [(n, v) for n, v in zip(pods, values) if v is not None]
        axis.plot([n for n, _ in measured], [v for _, v in measured], "o-", label="measured")
        for n, v in measured:
            axis.annotate(f"{v:.3g}", (n, v), textcoords="offset points", xytext=(4, 6))
        if key in TARGETS:
            xs, ys = zip(*TARGETS[key])
            axis.plot(xs, ys, "rs--", label="target (design §8)")
        axis.set_xscale("log")
        axis.set_xlim(700, 80_000)
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("pods on the virtual node")
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="upper left")
    fig.suptitle("vk-eci run, one virtual node, 2 shared cores (hack/bench-operator.sh)")
    fig.tight_layout()
    out = RESULTS / "bench-operator-growth.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
