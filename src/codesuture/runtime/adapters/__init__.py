"""Framework adapters: healing inside the frameworks that turn exceptions into 500
responses themselves (so a WSGI middleware around them never sees one).

* :mod:`codesuture.runtime.adapters.flask`: ``CodeSuture(app)`` (or ``init_app``);
* :mod:`codesuture.runtime.adapters.django`: ``CodeSutureMiddleware``;
* :mod:`codesuture.runtime.adapters.starlette`: ``install(app)`` (Starlette, FastAPI).

Each is imported only by the application that uses it; nothing here imports a
framework, and nothing on ``codesuture.boot``'s path imports this package.
"""
