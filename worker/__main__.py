"""``python -m worker`` starts a worker pool."""

from worker.pool import main

main()
