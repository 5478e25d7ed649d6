"""The paper-figure plot scripts (``tnlib.paper_figures``), one module per figure.

``tnlib figures NAME`` runs what a figure is missing and calls its script's
``plot(runs, out_dir, quick=...)``; the scripts only read run directories.
"""
