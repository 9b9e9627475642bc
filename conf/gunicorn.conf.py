"""gunicorn settings for the web process: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

gunicorn itself binds to ``0.0.0.0:$PORT`` when ``PORT`` is set and runs
``$WEB_CONCURRENCY`` workers; this file keeps those and picks the gevent worker.
Settings are read through :mod:`conf.settings` so a bad value stops the start.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conf.settings import load

_settings = load()

worker_class = "gevent"
bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.web_concurrency
# One gevent worker holds this many connections (each a waiting request at most).
worker_connections = 10_000
backlog = 2048
keepalive = 5
# A sync request waits at most TASKGATE_WAIT_MAX_S (25 s by default), then answers;
# the sum stays under the 30 s that Procfile platforms allow between TERM and KILL.
graceful_timeout = int(_settings.wait_max_s) + 3
# Never load the app in the master: ZeroMQ contexts must not cross fork().
preload_app = False
# gunicorn's control socket (for gunicornc) defaults to one path per user, which
# several servers on one host would fight over; taskgate does not use it.
control_socket_disable = True
