"""The run's answer to a data owner's question: is my data set protected, by how much, and
what undoes it? Words derived from results.json's figures by fixed rules, never by hand.

Protected: a victim trained on the unlearnable set is at least ``MARGIN`` (10 points) below one
trained on random noise of the same strength on the same clusters, with the 95% interval of
that paired difference above zero. Noise that is merely there is not protection: beating clean
data alone is not enough.
"""

from __future__ import annotations

from typing import Any

from hpcue.config import CONTRASTIVE_CHOICES

MARGIN = 0.10
#: every ``level`` a verdict has, surest protection first (what an export reads back)
LEVELS = ("protected", "weak", "uncertain", "not protected", "undecided")


def _pts(value: float) -> str:
    return f"{100 * value:.0f} points"


def _interval(summary: dict) -> str:
    ci = summary.get("ci95")
    return "" if not ci else f", 95% interval {_pts(ci[0])} to {_pts(ci[1])}"


def level(results: dict[str, Any]) -> str:
    """``protected`` (surely, and by at least MARGIN); ``weak`` (surely below random, by less);
    ``uncertain`` (the interval reaches from zero or below to MARGIN or above: more victims
    would decide it); ``not protected`` (the interval stays under MARGIN and reaches zero); or
    ``undecided`` (one victim seed, or no random baseline)."""
    adv = results.get("uc_advantage_over_random")
    if not adv or not adv.get("ci95"):
        return "undecided"
    low, high = adv["ci95"]
    if low > 0:
        return "protected" if adv["mean"] >= MARGIN else "weak"
    return "uncertain" if high >= MARGIN else "not protected"


def _defense_line(results: dict[str, Any]) -> str | None:
    worst, defenses = results.get("worst_case_defense"), results.get("defenses") or {}
    if not worst or worst == "uc":
        return None
    name = worst.removeprefix("uc+")
    what = (defenses.get(name) or {}).get("what") or name
    acc, plain = results["victims"][worst]["mean"], results["unlearnable_test_acc"]
    line = (f"The countermeasure that undoes the most of it: {what}. A model trained on the "
            f"protected images after it scores {acc:.2f} (without it {plain:.2f}).")
    # UC under the countermeasure against clean data or random noise without it: the
    # countermeasure's own cost counts on UC's side, so only "undone" can be read from these,
    # never "still protected"
    near = [label for key, label in (("worst_case_below_clean", "the originals"),
                                     ("worst_case_advantage_over_random", "random noise"))
            if (results.get(key) or {}).get("ci95") and results[key]["ci95"][1] < MARGIN]
    if near:
        line += (f" After {what}, a model learns from the protected images about as well as "
                 f"from {' or from '.join(near)} (surely within {_pts(MARGIN)}): do not count "
                 f"on the protection against someone who tries {what}.")
    return line


def _learner_line(results: dict[str, Any]) -> str | None:
    """The verdict is victim.arch's; another learner that learns more from the protected
    images (victim.other_archs, victim.contrastive) is said beside it."""
    worst = results.get("worst_case_over_learners") or {}
    if not worst or worst.get("learner") == "uc":
        return None
    learner = worst["learner"].split(":")[0]
    clean = results["victims"].get(f"{learner}:clean", {}).get("mean")
    who = (f"A {learner.upper()} learner with a linear probe" if learner in CONTRASTIVE_CHOICES
           else f"A {learner} victim")
    return (f"This verdict is the {results.get('victim', 'first')} victims'. {who} learns more "
            f"from the protected images: {worst['test_acc']:.2f} (from the originals "
            f"{clean:.2f}).")


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """``{"level": ..., "text": [lines]}`` for results.json and the run's closing lines."""
    lvl = level(results)
    uc, clean = results["unlearnable_test_acc"], results["clean_test_acc"]
    adv = results.get("uc_advantage_over_random")
    rand = (results.get("baselines") or {}).get("random", {}).get("mean")
    opening = {
        "protected": "PROTECTED.",
        "weak": f"WEAKLY PROTECTED: surely below random noise, but by less than "
                f"{_pts(MARGIN)}.",
        "uncertain": f"UNCERTAIN: the 95% interval of the margin over random noise reaches "
                     f"from zero or below to {_pts(MARGIN)} or more; more victims "
                     f"(victim.seeds) or runs (seed) would decide it.",
        "not protected": f"NOT PROTECTED: a model learns from these images about as well as "
                         f"from images with random noise of the same strength (within "
                         f"{_pts(MARGIN)}, surely).",
        "undecided": "NO VERDICT: it needs the random-noise baseline and at least two victim "
                     "seeds (victim.baselines, victim.seeds).",
    }[lvl]
    lines = [f"Verdict: {opening}",
             f"A model trained on the protected images scores {uc:.2f} on real test images, "
             f"against {clean:.2f} when trained on the originals ({_pts(clean - uc)} lower"
             f"{_interval(results.get('uc_below_clean') or {})})."]
    if adv is not None and rand is not None:
        side = "better" if adv["mean"] >= 0 else "worse"
        lines.append(f"Random noise of the same strength on the same clusters leaves it at "
                     f"{rand:.2f}: the protection is {_pts(abs(adv['mean']))} {side} than "
                     f"noise{_interval(adv)}.")
    defense = _defense_line(results)
    if defense:
        lines.append(defense)
    learner = _learner_line(results)
    if learner:
        lines.append(learner)
    return {"level": lvl, "margin": MARGIN, "text": lines}
