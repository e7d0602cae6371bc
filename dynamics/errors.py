"""Errors caused by what a user gave us (a config, a data file, a store).

The command line prints a :class:`DynamicsError` as one line and exits with status 2; library callers
catch them as the ``ValueError`` they also are.
"""


class DynamicsError(Exception):
    """Base class of every error that a user's input caused."""


class ConfigError(DynamicsError, ValueError):
    """A config or preset key, type or value that cannot be used."""


class DataError(DynamicsError, ValueError):
    """A data file that is missing or malformed; the message says which file and what was expected."""


class StoreError(DynamicsError, ValueError):
    """A run store that cannot be opened or appended to (foreign schema, not a store, bad step)."""


class StoreLockedError(StoreError):
    """Another writer holds the store's lock file."""


class StaleAnalysisWarning(UserWarning):
    """A stored analysis was computed from other data than the store now holds, and was left out."""
