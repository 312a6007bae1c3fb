"""The pipeline: plan, observe and judge a spec (evaluate.py), run a suite of them (suite.py), scan a checkpoint (scan.py)."""
