"""ServeWise: decide how to serve models (KServe or Ray Serve), grounded in criteria and manifests.

The core library. It never imports ray, fastapi or gradio: ``serve/`` and ``ui/`` wrap it.
"""

__version__ = "0.1.0"
