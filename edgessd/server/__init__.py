"""``edgessd serve``: one Engine behind a local OpenAI-compatible HTTP API.

    schema.py   request bodies -> GenRequest (validated), ApiError -> OpenAI's error body
    shapes.py   GenerationResult -> OpenAI's response and chunk objects, with llama-server timings
    stops.py    stop strings: cut the text, hold back what might be the start of one
    worker.py   the request queue and the one thread that runs generations
    app.py      the Starlette routes that join them
    run.py      the listening socket and uvicorn, halting the worker on Ctrl-C

The server imports starlette only when ``edgessd serve`` runs; the rest of edgessd never does.
"""
