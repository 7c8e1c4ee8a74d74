"""The error users see as one `error:` line: a setting that cannot work, named with its fix.

Its own module so that `games`, `config` and `presets` can all raise it without importing each other.
"""


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line naming field, value and fix."""
