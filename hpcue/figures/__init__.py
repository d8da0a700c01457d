"""Every figure hpcue draws, in one room: the generate stage's preview, the evaluate stage's
victim curves, a sweep report's batch and throughput plots.

A figure is drawn from plain values (numpy arrays, lists, numbers) and handed back as file
bytes: the stages and the sweep report compute what is shown and write the files. matplotlib
is loaded on the first drawing, never on import, so nothing that merely imports this package
(``hpcue sweep render``, the CLI) pays for it.
"""
