"""Unlearnable examples by Bayes-error maximisation (Zhang, Sun, Lim, Zhang)."""
