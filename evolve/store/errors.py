"""The store's one error: a run database or run directory that cannot be used."""


class ArchiveError(Exception):
    """A run database that cannot be used or written; the message is one line naming the path."""
