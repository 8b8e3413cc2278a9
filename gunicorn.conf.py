"""gunicorn settings for the gateway, read by `gateway serve` and by a plain `gunicorn wsgi:app` started
in this folder (gunicorn loads ./gunicorn.conf.py from its working directory).

Only what every deployment needs lives here: the access log masks phone numbers and never holds a
click-to-call link (gateway/access_log.py). Worker settings (workers, worker class, threads, timeouts)
are still given on the command line; they move here later.
"""

logger_class = "gateway.access_log.MaskingLogger"
