"""``python -m scheduler`` is the ``rqbeat`` command."""

from scheduler.cli import main

main()
