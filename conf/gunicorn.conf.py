"""gunicorn settings for the web process: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

gunicorn itself binds to ``0.0.0.0:$PORT`` when ``PORT`` is set and runs
``$WEB_CONCURRENCY`` workers; this file keeps those and picks the gevent worker.
Settings are read through :mod:`conf.settings` so a bad value stops the start.

Prometheus multiprocess mode: the workers keep their metrics in files under
``PROMETHEUS_MULTIPROC_DIR``. This file runs in the master before any worker is
forked, so it prepares the directory here and the workers inherit the variable:
a fresh temporary directory when it is unset (removed when the master exits), or
the given one emptied of the last run's files, which would otherwise be summed
into this run's counts.
"""

import glob
import os
import shutil
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conf.settings import load

_settings = load()

# Known limit: a HUP makes gunicorn run this file again, which then finds the
# directory it made in the environment and takes it as given: the counts start
# from zero (Prometheus' rate() copes with that), and the directory is no longer
# removed at exit but stays in the temporary directory until the OS clears it.
if _settings.prometheus_multiproc_dir:
    _metrics_dir = _settings.prometheus_multiproc_dir
    _made_metrics_dir = False
    for _stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(_stale)
else:
    _metrics_dir = tempfile.mkdtemp(prefix="taskgate-metrics-")
    _made_metrics_dir = True
    # Read by prometheus-client in each worker, and by conf.settings there.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

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


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live-gauge files, so scrapes stop reporting them.

    Its counters and histograms stay summed in, as Prometheus counters must not
    go down when a process is replaced.
    """
    # Imported here, after PROMETHEUS_MULTIPROC_DIR is set above.
    from prometheus_client import multiprocess

    # prometheus-client 0.26 leaves this function unannotated.
    multiprocess.mark_process_dead(worker.pid, _metrics_dir)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Remove the metrics directory this file made."""
    if _made_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
