"""The profiles service: the User aggregate (domain.py), its REST API (api.py) and read models."""
