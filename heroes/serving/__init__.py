"""FastAPI service over case stores and indexes."""
