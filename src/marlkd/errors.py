"""Error types a user sees: each message names what is wrong and where."""


class MarlkdError(Exception):
    """Base of every error caused by user input (bad file, bad config, unknown name)."""


class ConfigError(MarlkdError, ValueError):
    """A configuration field is out of range or inconsistent; the message names the field."""


class DatasetError(MarlkdError):
    """A dataset file is missing, corrupt or does not match; the message names the file and the field."""
