"""A Flask application, served on every core by parallio's WSGI server:

    python -m parallio wsgi examples.wsgi_flask_app:app

(run from the repository root, so that ``examples`` is importable).
"""

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask on parallio"


@app.get("/json")
def hello_json():
    return jsonify(hello=request.args.get("name", "world"))


@app.post("/echo")
def echo():
    return Response(request.get_data(), mimetype="application/octet-stream")


@app.post("/form")
def form():
    return request.form["name"]


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "3"))

    def numbers():
        for number in range(count):
            yield f"{number}\n"

    return Response(stream_with_context(numbers()), mimetype="text/plain")


@app.get("/cookie")
def cookie():
    response = jsonify(flavour=request.cookies.get("flavour"))
    response.set_cookie("visited", "yes")
    return response


@app.get("/error")
def error():
    raise RuntimeError("a bug in the application")
