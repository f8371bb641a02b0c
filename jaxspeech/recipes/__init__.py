"""Recipes: turn an experiment config (``configs/*.py``) into a trained, evaluated, reported run."""
