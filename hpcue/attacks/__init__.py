"""Ways to make a training set unlearnable, behind one interface (``base.Attack``).

UC lives in ``uc/``; baselines (random and class-wise noise) and later attacks (error-minimizing,
AUE, AAP) each get a module or package here and implement the same ``Attack.make``.
"""
