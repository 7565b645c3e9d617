"""Explaining knobs: the hyperparameter catalog, live calculators by topic, and sweeps with decision rules."""
