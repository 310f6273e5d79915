"""What every ravend program runs on, whichever it is (ravend, ravend-repeater,
ravend-mongo-ingest, ravenctl): nothing here knows meters, sinks or stores.

- ``backoff``: the one capped exponential backoff of every retry loop;
- ``outage``: up or down, and when a failure or a recovery is worth a log line (sink workers,
  repeater, MongoDB ingest);
- ``supervisor``: the threads of ravend's parts, restarted when they fail;
- ``signals``: SIGTERM/SIGINT stop, SIGHUP reloads;
- ``notify``: sd_notify (READY=1, STATUS=, WATCHDOG=1) under systemd, and the ``Heartbeat``
  that paces WATCHDOG=1 and STATUS= in the repeater's and the MongoDB ingest's loops;
- ``logs``: log lines on stderr, with journald's priority prefixes when stderr is the journal;
- ``config_loader``: a command line's configuration file, its overrides, and the one line
  that refuses it;
- ``packages``: the refusal when a configured feature's optional Debian package is missing.
"""
