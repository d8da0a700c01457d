"""Launchers, topology and collectives: everything that knows more than one process exists.

Importing this package must not import torch (the CLI limits threads before torch starts).
"""
