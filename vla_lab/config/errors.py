class ConfigError(ValueError):
    """A configuration value is invalid; the message starts with the field's full name."""
