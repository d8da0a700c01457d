"""The learners table: for each report row whose runs trained more than the one victim
architecture (``victim.other_archs``, ``victim.contrastive``) or mixed sets (``victim.mixed``)
or took the Unlearnable Distance (``victim.ud``), one line per learner and set: its clean-test
accuracy trained on the clean and on the unlearnable set, mean ± std over the row's seeds, and
the worst case over learners. Nothing is written where no row has any.
"""

from __future__ import annotations

import statistics


def _over_seeds(runs: list[dict], arm: str) -> tuple[float, float, int] | None:
    values = [r["victims"][arm]["mean"] for r in runs
              if isinstance(r.get("victims"), dict) and arm in r["victims"]]
    if not values:
        return None
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values))


def _fmt(value: tuple[float, float, int] | None) -> str:
    return "-" if value is None else f"{value[0]:.3f} ± {value[1]:.3f} (n={value[2]})"


def _ud(runs: list[dict], arm: str) -> str:
    values = [((r.get("ud") or {}).get("arms") or {}).get(arm, {}).get("ud") for r in runs]
    values = [v for v in values if isinstance(v, (int, float))]
    return f"{statistics.mean(values):.2f}" if values else "-"


def learner_lines(row: dict) -> list[tuple[str, str, str, str, str]]:
    """(learner, trained on, its accuracy, from the clean set, UD) for one report row."""
    runs = row["_runs"]
    first = runs[0]
    prefixes = [("", str(first.get("victim", "victim")) + " (supervised)")]
    prefixes += [(f"{a}:", f"{a} (supervised)") for a in (first.get("other_archs") or {})]
    contrastive = (first.get("contrastive") or {}).get("methods") or []
    prefixes += [(f"{m}:", f"{m} (contrastive, linear probe)") for m in contrastive]
    lines = []
    for prefix, learner in prefixes:
        clean = _over_seeds(runs, f"{prefix}clean")
        sets = ["uc", *(["random", "classwise"] if prefix in ("", *(f"{m}:"
                                                                 for m in contrastive))
                        else [])]
        for name in sets:
            acc = _over_seeds(runs, f"{prefix}{name}")
            if acc is not None:
                lines.append((learner, name, _fmt(acc), _fmt(clean),
                              _ud(runs, name) if prefix == "" else "-"))
    for mix in first.get("mixed") or []:
        acc = _over_seeds(runs, mix["arm"])
        lines.append((prefixes[0][1], f"{mix['share']:g} unlearnable, rest clean", _fmt(acc),
                      _fmt(_over_seeds(runs, "clean")), "-"))
    return lines


def has_learners(row: dict) -> bool:
    r = row["_runs"][0]
    return bool(r.get("other_archs") or r.get("contrastive") or r.get("mixed") or r.get("ud"))


HEADS = ["data set", "attack", "setting", "learner", "trained on", "its clean-test acc",
         "trained on clean", "UD"]


def learners_markdown(rows: list[dict]) -> list[str]:
    """The learners table, or nothing where no row has more than the one victim."""
    rows = [r for r in rows if has_learners(r)]
    if not rows:
        return []
    lines = ["## Every learner: supervised, contrastive, mixed data", "",
             "| " + " | ".join(HEADS) + " |", "|" + "---|" * len(HEADS)]
    for row in rows:
        worst = [r.get("worst_case_over_learners") for r in row["_runs"]]
        for learner, on, acc, clean, ud in learner_lines(row):
            cells = [row["dataset"], row["attack"], row["setting"] or "-", learner, on, acc,
                     clean, ud]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        named = sorted({w["learner"] for w in worst if w})
        if named:
            lines.append(f"| {row['dataset']} | {row['attack']} | {row['setting'] or '-'} | "
                         f"worst case over learners | uc | "
                         f"{_fmt(_worst(row['_runs']))} | - | {', '.join(named)} |")
    lines += ["", "Accuracy on the clean test set, mean ± std over the row's seeds (each seed's "
              "figure the mean of its victims). Contrastive learners learn without labels and "
              "are read through a linear probe trained beside them. UD: the Unlearnable "
              "Distance of the supervised victims' set to the clean set (0: learned like the "
              "clean set; docs/evaluation.md); the worst case's last column names the learner."]
    return lines


def _worst(runs: list[dict]) -> tuple[float, float, int] | None:
    values = [(r.get("worst_case_over_learners") or {}).get("test_acc") for r in runs]
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values))
