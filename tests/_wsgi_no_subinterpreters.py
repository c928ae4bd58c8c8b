"""A WSGI application whose module refuses to load in a subinterpreter, as
an extension module without multi-interpreter support does."""

import sys

if sys.version_info >= (3, 13):
    import _interpreters

    if _interpreters.get_current() != _interpreters.get_main():
        raise ImportError("this module refuses subinterpreters")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served by a process"]
