"""Quality metrics of trained runs, each tested by hand computation on NumPy:

    positions.py   loss by position inside a document, bits per byte
    documents.py   held-out documents scored one by one at chosen context windows
                   (length extrapolation, context gain), validation and test halves
    bootstrap.py   paired bootstrap intervals over documents and seeds
    passkey.py     passkey retrieval by length and depth
    recall.py      MQAR recall in distribution and past the training lengths
    scorer.py      the scorer contract: a batch in, per-token losses and hits out
    run_eval.py    a scorer of a run directory's newest weights (one process)
"""
