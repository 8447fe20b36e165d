"""Tether's domain: sessions, their event logs, the prompt registry, the turn runner and agents.

Nothing in this package imports Flask, flask-sock, werkzeug or gevent: it runs on plain
threads (unit tests) and becomes cooperative under gunicorn's gevent worker by monkey-patching.
"""
