"""Alembic migrations of the database schema; cryoclust.core.schema runs them at start-up."""
