"""Persistence: table models, repositories, the engine and migrations.

Importing the package registers every table on ``Base.metadata`` (the core tables and
the dashboard's), so Alembic and the schema check see the whole schema whichever
module a caller imports first.
"""

from hpo_service.db import models, models_dashboard  # noqa: F401
