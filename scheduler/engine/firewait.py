"""The last milliseconds before a prepared fire: slept on the clock, not on a socket.

The leader waits on its event subscription (edits and acks wake it). That wait is a
``poll(2)`` whose timeout the kernel takes in whole milliseconds, rounded up, followed
by hiredis's read: measured, it ends 1.0-1.4 ms after the time asked for. For a fire
decided ahead (:meth:`Dispatcher.prepare`) that overshoot was most of the fire lag, so
the wait is split: on the event socket until :data:`FINE_S` before the send, then
``clock.sleep`` (``clock_nanosleep``, microseconds plus the kernel's timer slack of
~50 µs) up to the due moment. An event published during those last milliseconds is
read on the next pass; the send it may have raced is fenced by the revision like any
other (the script refuses it and the batch is decided again).

Timeline of one fire due at T (monotonic, mapped from Redis time)::

    T-200 ms  wake, read + decide the batch, pack its first write  (service: PREPARE_S)
    T-3 ms    the event wait ends                                  (coarse)
    T         the clock sleep ends; write the packed bytes          (fine)

T is reckoned from the reply to the ``TIME`` read (:func:`surely_at`), never from the
middle of its round trip, so the write cannot reach Redis before its due time.
"""

from __future__ import annotations

from scheduler.clock import Clock

#: How long before a prepared send the event wait hands over to the clock: more than
#: the socket wait's overshoot, short enough that ignoring events costs nothing.
FINE_S = 0.003


def split(seconds: float, send_in_s: float | None, fine_s: float = FINE_S) -> float:
    """How much of a wait of ``seconds`` to spend on the event socket, when a prepared
    send is due in ``send_in_s`` (None: none is). A wait that reaches into the last
    ``fine_s`` before the send (a renewal due a moment before it is served by the
    same wake) hands them to the clock; any other wait is all on the socket."""
    if send_in_s is None or seconds < send_in_s - fine_s:
        return seconds
    return max(0.0, send_in_s - fine_s)


def surely_at(received: float, until_s: float) -> float:
    """The monotonic time by which Redis's clock has surely moved ``until_s`` past what
    a ``TIME`` read returned, when its reply was received at monotonic ``received``:
    Redis read its clock somewhere in the round trip, at the latest as it replied. A
    send at this time lands at or after its due time, late by up to the round trip."""
    return received + until_s


def sleep_until(deadline: float, clock: Clock) -> None:
    """Sleep on ``clock`` until its monotonic time reaches ``deadline`` (a sleep may end
    early on a signal or a coarse clock: sleep again for what is left)."""
    while (left := deadline - clock.monotonic()) > 0:
        clock.sleep(left)
