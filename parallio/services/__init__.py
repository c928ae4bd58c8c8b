"""Services: the classic TCP protocols, and (submodules) PyParallel's
runtime services."""

from .protocols import Chargen, Daytime, Discard, Echo, EchoLine, EchoUpper, Qotd

__all__ = ["Chargen", "Daytime", "Discard", "Echo", "EchoLine", "EchoUpper", "Qotd"]
