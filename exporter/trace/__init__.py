"""``mailflow-exporter trace``: follow messages through every transport server's tracking log.

* ``events``: the tracking events a trace reads (more fields than the tracking collector's).
* ``query``: the search (one ``Get-MessageTrackingLog`` per server, in parallel, through the
  exporter's own sessions) and the ``Get-Queue`` follow-up for messages still in a queue.
* ``stitch``: a pure function from events to messages: MessageId across servers, InternalMessageId
  within one, SEND/RECEIVE and SUBMIT/RECEIVE pairs between servers (their clocks reconciled).
* ``verdict``: a pure function from a message to one verdict per recipient.
* ``render``: text and JSON; ``web``: the status page's trace form (off by default).

Senders, recipients and subjects are shown to whoever runs the trace; they never reach metrics,
labels or logs above debug level.
"""
