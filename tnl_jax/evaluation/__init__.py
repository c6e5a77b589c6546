"""Quality metrics of trained runs (issue 21): held-out bits per byte, loss by position
inside a document, MQAR recall. ``positions`` is pure NumPy; ``run_eval`` and
``recall`` run a run directory's newest weights."""
