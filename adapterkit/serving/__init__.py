"""Serving many runs from one base model over HTTP (`adapterkit serve`).

app.py       the FastAPI endpoints: /v1/predict, OpenAI-compatible /v1/completions and /v1/chat/completions,
             /v1/models, /health, /metrics, and the admin /v1/adapters
batcher.py   dynamic batching on one worker thread (the only one that touches the models)
metrics.py   Prometheus counters and histograms
server.py    uvicorn, the bind and API-key checks, graceful stop
"""

from .app import ServeSettings, create_app
from .server import serve

__all__ = ["ServeSettings", "create_app", "serve"]
