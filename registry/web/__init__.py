"""The web application for data entry (FastAPI, server-rendered Jinja2 pages)."""
