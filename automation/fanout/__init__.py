"""How far a run may reach: the cause chain (which run is acting now) and the fan-out budgets\n(runs, writes and bytes per run tree and per organization)."""
