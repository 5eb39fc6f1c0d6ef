"""The posts service: the Post aggregate (domain.py) and its REST API (api.py)."""
