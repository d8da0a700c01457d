"""Does UC protect digits better than random noise on the same clusters? A study over seeds.

Runs ``hpcue run`` once per (variant, run seed) into ``--out`` (a finished run is reused, so the
study can be resumed or extended), then prints one markdown table per variant: every arm's clean
test accuracy as mean +- std over all its victims (run seeds x victim seeds), and UC's paired
advantage over ``random``. No figure here is a speed claim.

    python benchmarks/digits_protection_study.py [--seeds 0 1] [--variants default no-augment]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hpcue.evaluation.metrics import seed_summary

#: name -> --set overrides on top of the embedded default
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "no-augment": ["data.augment=none"],
    "32px": ["data.image_size=32"],
    "supervised-surrogate": ["surrogate.pretraining=supervised_on_target_labels"],
    "simclr": ["surrogate.pretext=simclr"],
    "generator-60-epochs": ["train.epochs=60"],
    "victim-16-epochs": ["victim.epochs=16"],
    "k4": ["cluster.num_clusters=4"],
    "three-channels": ["train.perturbation_channels=3"],
}


def run(out: Path, variant: str, seed: int) -> dict:
    run_dir = out / variant / f"seed{seed}"
    results = run_dir / "results.json"
    if not results.is_file():
        sets = [f"--set={s}" for s in [*VARIANTS[variant], f"seed={seed}"]]
        print(f"running {variant} seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
        hpcue = Path(sys.executable).parent / "hpcue"  # the console script beside this python
        subprocess.run([str(hpcue), "run", "--out", str(run_dir), *sets],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(results.read_text())


def fmt(summary: dict) -> str:
    ci = summary["ci95"]
    interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f} | {interval} | {summary['n']}"


def table(variant: str, runs: list[dict]) -> str:
    arms = list(runs[0]["victims"])
    lines = [f"### {variant} ({', '.join(VARIANTS[variant]) or 'as shipped'})", "",
             f"purity {', '.join(str(r['cluster_purity']) for r in runs)}; "
             f"seconds {', '.join(str(round(sum(r['seconds'].values()))) for r in runs)}", "",
             "| arm | mean ± std (all victims) | 95% interval | n |", "|---|---|---|---|"]
    for arm in arms:
        values = [v for r in runs for v in r["victims"][arm]["per_seed"]]
        lines.append(f"| {arm} | {fmt(seed_summary(values))} |")
    diffs = [d for r in runs for d in r["uc_advantage_over_random"]["per_seed"]]
    lines.append(f"| UC below random (paired) | {fmt(seed_summary(diffs))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/digits-protection-study"))
    args = parser.parse_args()
    for variant in args.variants:
        print(table(variant, [run(args.out, variant, s) for s in args.seeds]), "\n", flush=True)


if __name__ == "__main__":
    main()
