"""The database: engine and sessions (`engine`), the embedded PostgreSQL (`embedded_pg`), the
SQLAlchemy models (`models`) and the Alembic migrations (`migrations/`)."""
