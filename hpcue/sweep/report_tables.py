"""The report's tables: the CSV's columns, the Markdown table and the LaTeX table.

Rows come from ``report.summarise`` (one per config). The tables show the same figures in the
same order; they differ only in how a cell is written: no spread (one run of one victim seed)
is ``n/a`` (never ``± 0.0000``, which would claim a measured spread of zero) and an unknown
value is ``-``; eps is ``n/255``, the way the literature states it. The CSV keeps plain
numbers, empty when unknown.
"""

from __future__ import annotations

import re

COLUMNS = ["dataset", "setting", "config", "global_batch_size", "world_size", "lr_scaling",
           "epsilon", "num_clusters", "victim_epochs", "effective_lr", "seeds",
           "expected_seeds", "clean_test_acc_mean", "clean_test_acc_std",
           "unlearnable_test_acc_mean", "unlearnable_test_acc_std", "random_test_acc_mean",
           "random_test_acc_std", "worst_case_unlearnable_test_acc_mean",
           "worst_case_unlearnable_test_acc_std", "cluster_purity",
           "seconds_total", "stage1_images_per_second", "num_classes"]

#: the accuracies of both tables: (row key stem, Markdown head, LaTeX head)
ACCURACIES = [("clean_test_acc", "clean acc", "clean"),
              ("unlearnable_test_acc", "unlearnable acc", "unlearnable"),
              ("random_test_acc", "random-noise acc", "random noise"),
              ("worst_case_unlearnable_test_acc", "worst case", "worst case")]
MISSING = "-"
NO_SPREAD = "n/a"

NOTE = ("Accuracies on the clean test set, mean ± std over the seeds of each row (each seed's "
        "figure is itself the mean over its victim seeds; a row of one seed: ± over its victim "
        "seeds, as `hpcue run` printed it; n/a: one seed, no spread); lower "
        "unlearnable accuracy is better protection, and it counts only as far as it is below "
        "random noise; at chance level nothing was learnt. worst case: the highest unlearnable "
        "accuracy, with or without a defense. config: digest of the row's whole config but its "
        "seed (two rows never share one). eps: L-inf bound in pixel levels; K: clusters; "
        "effective lr: stage 1's learning rate after its lr rule. (!): fewer seeds finished "
        "than the sweep asked for.")


def eps_255(eps: float | None) -> str:
    """eps as pixel levels, ``8/255``: how UC and its baselines state their bound."""
    if eps is None:
        return MISSING
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{levels:.3g}/255"


def _known(value: object, fmt: str = "") -> str:
    return MISSING if value is None else format(value, fmt)


def seeds(row: dict) -> str:
    """How many seeds, and how many the sweep asked for when fewer finished."""
    want = row["expected_seeds"]
    return f"{row['seeds']} of {want} (!)" if want and row["seeds"] < want else str(row["seeds"])


def mean_std(row: dict, name: str, digits: int, tex: bool = False) -> str:
    """mean ± std of an accuracy; ``n/a`` for the spread of a single value."""
    mean, std = row[f"{name}_mean"], row.get(f"{name}_std")
    if mean is None:
        return MISSING
    spread = NO_SPREAD if std is None else f"{std:.{digits}f}"
    if tex:
        return (f"${mean:.{digits}f} \\pm$ {spread}" if std is None
                else f"${mean:.{digits}f} \\pm {spread}$")
    return f"{mean:.{digits}f} ± {spread}"


def _cells(row: dict) -> list[str]:
    """The columns both tables share before the accuracies, as text."""
    return [row["dataset"], row["setting"] or MISSING, str(row["global_batch_size"]),
            str(row["world_size"]), row["lr_scaling"], seeds(row), row["config"],
            eps_255(row["epsilon"]), _known(row["num_clusters"]), _known(row["victim_epochs"]),
            _known(row["effective_lr"], ".4g")]


HEADS = ["data set", "setting", "global batch", "world size", "lr rule", "n seeds", "config",
         "eps", "K", "victim epochs", "effective lr"]


def _chance(rows: list[dict]) -> list[str]:
    """Chance level (1 / classes) of each data set whose rows agree on their classes."""
    out = []
    for dataset in sorted({r["dataset"] for r in rows}):
        classes = {r["num_classes"] for r in rows if r["dataset"] == dataset}
        if len(classes) == 1 and None not in classes:
            n = classes.pop()
            out.append(f"{dataset} 1/{n} = {1 / n:.4f}")
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(rows: list[dict], failed: dict[str, str]) -> str:
    heads = [*HEADS, *(md for _, md, _ in ACCURACIES), "purity", "seconds", "stage-1 img/s"]
    lines = ["| " + " | ".join(heads) + " |",
             "|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|"
             + "---|" * len(ACCURACIES) + "---:|---:|---:|"]
    for r in rows:
        cells = [*_cells(r), *(mean_std(r, name, 4) for name, _, _ in ACCURACIES),
                 f"{r['cluster_purity']:.3f}", f"{r['seconds_total']:.1f}",
                 f"{r['stage1_images_per_second']:.1f}"]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    lines += ["", NOTE]
    chance = _chance(rows)
    if chance:
        lines += ["", "Chance level (1 / number of classes): " + "; ".join(chance) + "."]
    if failed:
        lines += ["", f"Missing or failed points ({len(failed)}): " + ", ".join(failed), ""]
        lines += [f"- {name}: {why}" for name, why in failed.items()]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}
_TEX_PATTERN = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL))


def tex_escape(text: str) -> str:
    """Text as LaTeX prints it literally: its special characters escaped, one line."""
    return _TEX_PATTERN.sub(lambda m: _TEX_SPECIAL[m.group()], " ".join(text.splitlines()))


def latex(rows: list[dict], failed: dict[str, str]) -> str:
    """A booktabs ``tabular`` of the same rows (needs ``\\usepackage{booktabs}``)."""
    heads = [*HEADS[:5], "seeds", HEADS[6], r"$\epsilon$", "$K$", *HEADS[9:],
             *(tex for _, _, tex in ACCURACIES)]
    lines = ["% hpcue report: mean $\\pm$ sample std over seeds (one seed: over its victim "
             "seeds); n/a: one seed (no spread)",
             "% needs \\usepackage{booktabs}",
             "\\begin{tabular}{llrrlrl" + "r" * 4 + "c" * len(ACCURACIES) + "}",
             "\\toprule",
             " & ".join(h if h.startswith("$") else tex_escape(h) for h in heads) + r" \\",
             "\\midrule"]
    for r in rows:
        cells = [tex_escape(c) for c in _cells(r)]
        cells += [mean_std(r, name, 3, tex=True) for name, _, _ in ACCURACIES]
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    chance = _chance(rows)
    if chance:
        lines.append("% chance level (1 / classes): " + tex_escape("; ".join(chance)))
    if failed:
        lines.append(f"% {len(failed)} missing or failed points, in no row: see report.md")
    return "\n".join(lines) + "\n"
