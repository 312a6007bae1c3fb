"""Steering: contrast sets (contrast.py), vectors built from them (vectors.py), steered
generation and its scores (steer.py), and the judges of generated text (judges.py)."""
