"""A Python client of taskgate's HTTP API, and the ``python -m client`` command line.

It speaks plain HTTP through ``requests``, so a caller that monkey-patches with
gevent gets a green client without doing anything else.
"""

from client.api import Client
from client.errors import (
    ProblemError,
    TaskgateError,
    TransportError,
    WaitTimeoutError,
)

__all__ = [
    "Client",
    "ProblemError",
    "TaskgateError",
    "TransportError",
    "WaitTimeoutError",
]
