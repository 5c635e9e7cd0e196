"""The engine's vocabulary, below everything else: models, choices, the registry of automatable\nmodels, record snapshots, the run context and field validators."""
