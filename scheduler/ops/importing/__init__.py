"""``rqbeat import``: schedules a user already has elsewhere, as an rqbeat TOML file.

Each reader turns another scheduler's definitions into rqbeat's user-facing settings
(the keys of ``rqbeat apply`` files) and never writes to its source. What cannot be
carried over is said in a note, never dropped silently: a one-off job, a repeat count,
a relative interval, a Celery ``crontab`` restricting both day fields (Celery requires
both to match, cron either).

Readers: :mod:`.rqcron` (RQ's ``cron.register`` config modules), :mod:`.rqscheduler`
(rq-scheduler's jobs in Redis), :mod:`.redbeat` (celery-redbeat's entries in Redis).
"""
