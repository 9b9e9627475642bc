"""WSGI entry point: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``."""

from app import create_app

app = create_app()
