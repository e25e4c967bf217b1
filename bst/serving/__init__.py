"""TF Serving's REST API for development machines (``python -m bst.serve``).

Modules, from the bottom up: ``servable`` (a loaded version), ``manager`` (which
version serves), ``batching`` (merged requests), ``codec`` (JSON <-> tensors),
``rest`` (URL routing, the Starlette app). ``bst.serve`` is the command line.
"""
