"""Saving a rule: creating, updating and deleting definitions, validated as a whole."""
