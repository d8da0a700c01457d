"""Does UC protect the embedded digits better than random noise on the same clusters? A study
over seeds, one variant a row.

Runs ``hpcue run`` once per (variant, run seed) into ``--out`` (a finished run is reused, so the
study can be resumed or extended), then prints per variant: cluster purity and NMI, every arm's
clean test accuracy as mean ± std over all its victims (run seeds x victim seeds) with a 95%
interval that includes the test set's sampling error (hpcue/evaluation/metrics.py), the per-seed
values, UC's paired advantage over ``random``, and the seconds each stage took. No figure here
is a speed claim beyond those seconds.

    python benchmarks/digits_protection_study.py [--seeds 0 1] [--variants mnist5k rotation]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hpcue.evaluation.metrics import pooled_summary

ALL_DEFENSES = ("victim.defenses=[grayscale, jpeg, jpeg10, bitdepth, cutout, mixup, cutmix, "
                "adversarial]")
#: name -> --set overrides on top of the embedded default (``{subset}``: the 0-4 surrogate)
#: the variants train 3 victim seeds a run (n = 6 over two run seeds), the default 6
THREE = "victim.seeds=3"
VARIANTS: dict[str, list[str]] = {
    # the default, with every defense as an arm (an arm never changes another: the default's
    # own arms are these runs' arms)
    "mnist5k": [ALL_DEFENSES],
    "all-images-3-epochs": ["train.generator_images=all", "train.epochs=3", THREE],
    "mnist5k-digits-0-4": ["surrogate.weights={subset}", THREE],
    "rotation": ["surrogate.pretraining=self_supervised", THREE],
    "simclr": ["surrogate.pretraining=self_supervised", "surrogate.pretext=simclr", THREE],
    "all-images-30-epochs": ["train.generator_images=all", THREE],
    "labels-of-the-protected-set": ["surrogate.pretraining=supervised_on_target_labels", THREE],
}


def hpcue_command() -> str:
    return str(Path(sys.executable).parent / "hpcue")  # the console script beside this python


def subset_surrogate(out: Path) -> Path:
    """The study's 0-4 surrogate: the shipped recipe on MNIST digits 0 to 4 only."""
    path = out / "surrogates" / "small_cnn-mnist5k-0-4.pt"
    if not path.is_file():
        subprocess.run([hpcue_command(), "surrogate", "mnist5k", "--out", str(path),
                        "--digits", "0,1,2,3,4"], check=True)
    return path


def run(out: Path, variant: str, seed: int) -> dict:
    run_dir = out / variant / f"seed{seed}"
    results = run_dir / "results.json"
    if not results.is_file():
        sets = [s.format(subset=subset_surrogate(out)) if "{subset}" in s else s
                for s in VARIANTS[variant]]
        print(f"running {variant} seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
        subprocess.run([hpcue_command(), "run", "-q", "--out", str(run_dir),
                        *[f"--set={s}" for s in [*sets, f"seed={seed}"]]],
                       check=True, stdout=subprocess.DEVNULL)
    return json.loads(results.read_text())


def fmt(summary: dict) -> str:
    ci = summary["ci95"]
    interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f} | {interval} | {summary['n']}"


def table(variant: str, runs: list[dict]) -> str:
    arms = list(runs[0]["victims"])
    seconds = {stage: [round(r["seconds"][stage]) for r in runs] for stage in runs[0]["seconds"]}
    lines = [f"### {variant} ({', '.join(VARIANTS[variant]) or 'as shipped'})", "",
             f"purity {', '.join(str(r['cluster_purity']) for r in runs)}; "
             f"NMI {', '.join(str(r['cluster_nmi']) for r in runs)}; seconds {seconds}", "",
             "| arm | mean ± std (all victims) | 95% interval | n | per seed |",
             "|---|---|---|---|---|"]
    for arm in arms:
        pooled = pooled_summary([r["victims"][arm] for r in runs])
        per_seed = ", ".join(f"{v:.3f}" for v in pooled["per_seed"])
        lines.append(f"| {arm} | {fmt(pooled)} | {per_seed} |")
    for key, label in (("uc_advantage_over_random", "UC below random (paired)"),
                       ("worst_case_advantage_over_random", "worst case below random")):
        if all(r.get(key) for r in runs):
            pooled = pooled_summary([r[key] for r in runs], bounds=(-1.0, 1.0))
            per_seed = ", ".join(f"{v:.3f}" for v in pooled["per_seed"])
            lines.append(f"| {label} | {fmt(pooled)} | {per_seed} |")
    lines.append("")
    lines.append(f"worst case: {', '.join(r['worst_case_defense'] for r in runs)}; verdicts: "
                 f"{', '.join(r.get('verdict', {}).get('level', '-') for r in runs)}")
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
