"""Which rules watch what: the rule index (model, event, organization -> rules), its version token\nshared by processes, and the loaded definition of a rule (its condition tree and actions)."""
