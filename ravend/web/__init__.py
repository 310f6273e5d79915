"""ravend-web: the household's dashboard and its read-only JSON API.

A WSGI application (``app``) under waitress (``server``), from Debian's archive. It reads the
store read-only through ``ravend.db`` and the query modules (``store``), never writes, and asks
the running ravend what is down over its control socket (``ravend.health``). The pages in
``static/`` use only the JSON API under /api/v1/.
"""
