"""Ids of a Realtime session's events, items, responses and conversation.

Every id is made once and never changes: an item keeps its id from the
event that announces it to the one that deletes it. Ids are the API's kind
prefix, the connection's token (random, from the server) and a counter, so
two connections never share one and a test with a fixed token gets the same
ids on every run. The adapter is sans-IO: the token comes from outside.
"""

from __future__ import annotations

import itertools


class Ids:
    def __init__(self, token: str) -> None:
        self.token = token
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        """A new id such as ``item_<token>000001``."""
        return f"{prefix}_{self.token}{next(self._counter):06d}"

    @property
    def session(self) -> str:
        return f"sess_{self.token}"

    @property
    def conversation(self) -> str:
        return f"conv_{self.token}"


__all__ = ["Ids"]
