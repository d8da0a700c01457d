"""The fault and bad-input campaign against the hpcue command line, a module a family.

``benchmarks/fault_campaign.py`` is the entry point; ``core`` says what a try is and judges
it, ``inputs`` fabricates inputs, ``campaign`` lists every try in order and runs them.
"""
