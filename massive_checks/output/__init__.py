"""What a run leaves: plain-data records (records.py), golden snapshots (golden.py), figure
panels and figures (panels.py, figures.py), results.json, HTML and claims tables (report.py)."""
