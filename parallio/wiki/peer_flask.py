"""The wiki's ``/search`` as a Flask application, the benchmark's peer on
gunicorn (``python -m parallio.wiki.bench`` starts it)::

    gunicorn -w 2 'parallio.wiki.peer_flask:create_app("DIR")'

It answers exactly what parallio's ``/search`` does, from the same index
format, mapped from the file (each worker maps it; the page cache holds it
once).
"""

from __future__ import annotations

import json
import mmap
import os

from flask import Flask, Response, abort, request

from .build import INDEX_NAME
from .index import DEFAULT_LIMIT, Index, parse_limit, search_document


def create_app(data_dir: str) -> Flask:
    with open(os.path.join(data_dir, INDEX_NAME), "rb") as file:
        index = Index(mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ))
    app = Flask(__name__)

    @app.get("/search")
    def search() -> Response:
        prefix = request.args.get("q")
        if prefix is None:
            abort(400)
        try:
            limit = parse_limit(request.args.get("limit", str(DEFAULT_LIMIT)))
        except ValueError as exc:
            return Response(f"400 {exc}\n", status=400, mimetype="text/plain")
        return Response(json.dumps(search_document(index, prefix, limit)),
                        mimetype="application/json")

    return app
