"""Bilevel attacks: error-minimizing noise (sample-wise, class-wise), AUE and AAP."""
