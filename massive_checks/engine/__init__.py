"""The engine: models and their architectures (models.py, synthetic.py), hooks and captures
(hooks.py, capture.py, stats.py), interventions' edits (edits.py), data (data.py), and the
session that runs one forward pass per (model, data, intervention) (session.py, apply.py)."""
