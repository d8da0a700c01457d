"""The attack comparison: one line per attack of a report's rows (``attack.name``), with its
threat model, the study's intervals, image quality and the time stage 1 took to craft it.

Written into report.md only where the rows hold more than one attack (a spec such as
``digits-attacks``); every row's figures come from the same intervals as the study table.
"""

from __future__ import annotations

import statistics

from hpcue.sweep.report_study import _number, fmt_interval, lookup


def _mean(runs: list[dict], key: str, digits: int) -> float | None:
    values = [v for v in (_number(lookup(r, key)) for r in runs) if v is not None]
    return round(statistics.mean(values), digits) if values else None


def attack_columns(runs: list[dict]) -> dict:
    """A row's attack (results.json before attacks were named: uc), whether it read the labels,
    PSNR / SSIM of its set and the seconds stage 1 took."""
    names = {str(lookup(r, "attack.name") or "uc") for r in runs}
    labels = {lookup(r, "attack.uses_labels") for r in runs}
    defenses = {r.get("worst_case_defense") for r in runs} - {None}
    return {"attack": "+".join(sorted(names)),
            "uses_labels": labels.pop() if len(labels) == 1 else None,
            "worst_case_defense": ", ".join(sorted(str(d) for d in defenses)) or None,
            "psnr_db": _mean(runs, "psnr_db", 2), "ssim": _mean(runs, "ssim", 4),
            "attack_seconds": _mean(runs, "attack_seconds", 1)}


HEADS = ["data set", "attack", "reads labels", "setting", "n seeds", "its victims' acc",
         "random noise", "below random", "worst case (defense)", "clean", "PSNR / SSIM",
         "stage 1 s"]


def _known(value: object, fmt: str = "") -> str:
    return "-" if value is None else format(value, fmt)


def attacks_markdown(rows: list[dict]) -> list[str]:
    """The comparison table, or nothing where the rows hold one attack."""
    if len({r["attack"] for r in rows}) < 2:
        return []
    lines = ["## The attacks compared: 95% intervals", "",
             "| " + " | ".join(HEADS) + " |", "|" + "---|" * len(HEADS)]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["attack"], r["setting"])):
        s = r["study"]
        labels = {True: "yes", False: "no"}.get(r["uses_labels"], "-")
        quality = (f"{_known(r['psnr_db'], '.1f')} dB / {_known(r['ssim'], '.3f')}"
                   if r["psnr_db"] is not None else "-")
        worst = fmt_interval(s["worst_case"]) + (f" ({r['worst_case_defense']})"
                                                 if r["worst_case_defense"] else "")
        cells = [r["dataset"], r["attack"], labels, r["setting"] or "-", str(r["seeds"]),
                 fmt_interval(s["unlearnable"]), fmt_interval(s["random"]),
                 fmt_interval(s["advantage"]), worst, fmt_interval(s["clean"]), quality,
                 _known(r["attack_seconds"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Each attack on the same data, split, eps, victims and defenses. its victims' "
              "acc: the clean-test accuracy of victims trained on the attack's set (results.json "
              "arm uc, whatever the attack); below random: random noise's accuracy minus the "
              "attack's, paired by victim seed; reads labels: the threat model (UC and random "
              "noise never see them). Intervals as in the study table."]
    return lines
