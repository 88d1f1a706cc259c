"""``python -m bench`` (``make bench``): run every benchmark and write bench/RESULTS.md."""

from bench.runner import main

main()
