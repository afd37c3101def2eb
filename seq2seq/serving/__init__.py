"""``seq2seq serve``: trained runs behind an HTTP API, with dynamic batching and a web page.

- ``schemas``: the request bodies, the server's limits and the one request error type;
- ``batching``: gathers concurrent requests to a model into one batched call, off the event loop;
- ``translation``, ``classification``, ``generation``: each head's service (``seq2seq.heads``
  names them): check a request, run a batch, shape the answer;
- ``app``: the FastAPI application: routes, API key, body limit, errors as JSON;
- ``static/``: the web page served at ``/``.
"""
