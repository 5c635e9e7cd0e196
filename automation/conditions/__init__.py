"""Conditions: operators, the tree evaluator, relative dates, condition CPU per organization, and\nsimulated events for dry runs."""
