"""``workers.demo.hello``: the job of the demo schedule (``make run``, the Docker compose file).

It ships with the worker so that a demo schedule runs wherever rqbeat is installed.
"""

from __future__ import annotations

from workers.fire import current_fire


def hello(name: str = "world") -> str:
    """The demo job: says which fire it runs for."""
    fire = current_fire()
    if fire is None:
        return f"hello {name} (not run by rqbeat)"
    message = f"hello {name} from fire {fire.fire_at.isoformat()} (attempt {fire.attempt})"
    print(message, flush=True)  # noqa: T201 - the demo narrates on the worker's stdout
    return message
