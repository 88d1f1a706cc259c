"""The Lua side of the protocol: every state transition of a schedule as one script.

A schedule is in exactly one of: ``due`` (in the due zset), ``running`` (in the
running zset, a job in flight), ``paused`` or ``broken`` (in neither). A paused
schedule whose last run is still in flight stays in the running zset until that run
is acknowledged.

- :mod:`.edits`: what people and the API do (upsert, remove, pause, resume, trigger);
- :mod:`.runs`: a run's end (ack, retry, nudge, start, mark broken);
- :mod:`.dispatch`: the leader's read of due schedules and its fenced write;
- :mod:`.listing`: the dashboard's keyset reads of the zsets (reads only).

Conventions: scores are epoch seconds (ms precision); ``fire_at`` is the ISO time of
the pending (or in-flight) fire, and ``''`` means "recompute from the due score" (set
when a definition changed under an in-flight run). Every edit INCRs the revision key,
which dispatch WATCHes, and publishes on the events channel so the leader re-plans its
wait at once. Each script's header lists its KEYS and ARGV one per line and names its
reply (:mod:`scheduler.protocol`); :mod:`scheduler.scripts` registers and calls them.
"""
