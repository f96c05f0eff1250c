"""Imported before any test module: atft sets OpenMP's wait policy before torch loads (``atft/__init__.py``),
so the suite runs with the threads ``atft train`` runs with and the runs' records say so."""

import atft  # noqa: F401
