"""Live events: every change of a run's state, published to GraphQL subscribers."""
