"""Plot ours's ``distill/*`` diagnostics against student updates, one line per variant (mean over its
finished seeds).

    python scripts/plot_distill_diagnostics.py runs/variants --variants full raw-teacher eval-target \
        --out results/distill-variants/diagnostics.png
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

PANELS = (
    ("distill/angle_corr", "corr(teacher angle, students' mapped angle)"),
    ("distill/mapped_cosine_student", "cosine between steps, through N"),
    ("distill/angle_mapped_student_std", "std of the students' mapped angles (deg)"),
    ("distill/grad_norm_rel", "|gradient of alpha L_rel| into the students"),
    ("distill/l_kl", "L_KL per agent"),
    ("loss/action", "L_action per agent"),
)


def read_curves(run: Path) -> dict[str, dict[int, float]]:
    """metric -> {student update: value} (a run that trained its teacher counts those updates first)."""
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    teacher = max((int(r["step"]) for r in rows if r["metric"].startswith("teacher/")), default=0)
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        curves[row["metric"]][int(row["step"]) - teacher] = float(row["value"])
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the variants directory (<root>/<variant>/s<seed>/metrics.csv)")
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for variant in args.variants:
        runs = sorted((Path(args.root) / variant).glob("s*"))
        curves = [read_curves(r) for r in runs if (r / "results.json").exists()]  # finished runs
        for ax, (metric, title) in zip(axes.flat, PANELS, strict=True):
            steps = sorted(set.intersection(*(set(c.get(metric, {})) for c in curves)) if curves else set())
            steps = [s for s in steps if s > 0]
            values = [sum(c[metric][s] for c in curves) / len(curves) for s in steps]
            ax.plot(steps, values, label=f"{variant} ({len(curves)} seeds)")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("student update", fontsize=8)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
