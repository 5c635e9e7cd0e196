"""Action handlers (filled in by the engine work)."""


def parameter_errors(action_type, parameters, rule):
    return {}
