"""Actions: one handler per action type, their registry, templates, and the webhook client."""
