"""The chaos rig: faults against a live fleet, and an audit of every fire (``make chaos``)."""
