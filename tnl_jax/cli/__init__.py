"""The command lines, installed as console scripts (pyproject.toml):

    tnl-train     train.py     train (or resume) a run: --config NAME|FILE, key=value ...
    tnl-generate  generate.py  sample from a run, converted or Hugging Face directory
    tnl-convert   convert.py   a Hugging Face checkpoint -> the converted format
"""
