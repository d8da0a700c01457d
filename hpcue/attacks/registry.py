"""Every attack by name: adding one is a class implementing ``Attack`` and a line here."""

from __future__ import annotations

from hpcue.attacks.base import Attack
from hpcue.attacks.bayes_error.attack import BayesError
from hpcue.attacks.bilevel.attack import (
    AAP,
    AUE,
    ErrorMinimizingClasswise,
    ErrorMinimizingSamplewise,
)
from hpcue.attacks.noise import ClassWise, RandomNoise
from hpcue.attacks.uc.attack import UnlearnableClusters
from hpcue.errors import ConfigError, did_you_mean

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (UnlearnableClusters, RandomNoise, ClassWise,
                              ErrorMinimizingSamplewise, ErrorMinimizingClasswise, AUE, AAP,
                              BayesError)
}


def attack_class(name: str) -> type[Attack]:
    """The attack registered as ``name`` (one error naming the known ones otherwise)."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}{did_you_mean(name, ATTACKS)}; "
                          f"known: {', '.join(ATTACKS)}")
    return ATTACKS[name]
