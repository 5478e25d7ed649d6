"""The papers' own numbers that the figures set beside ours, and the scripts that
extracted them from the official repositories (``core_shapes_official.csv`` from
``extract_core_shapes_official.py``)."""
