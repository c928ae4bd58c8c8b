"""tefb on PostgreSQL: the module workers import when ``--db`` names a
PostgreSQL server. It imports psycopg, so that choosing the host checks that
psycopg loads in an isolated interpreter (else ``auto`` takes processes)."""

import psycopg  # noqa: F401  (imported for the check above)

from .tefb import Tefb

__all__ = ["Tefb"]
