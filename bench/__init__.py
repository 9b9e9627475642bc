"""The benchmark harness: taskgate against a bare-Flask ceiling and Celery.

See bench/README.md for how to run it and what each row means.
"""
