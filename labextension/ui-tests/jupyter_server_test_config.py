"""The JupyterLab server the UI tests drive: Galata's test setup, on 127.0.0.1 only.

The root folder comes from $JUPYTERLAB_GALATA_ROOT_DIR (playwright.config.ts makes a fresh one).
"""

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 (c is the config object Jupyter passes in)
c.ServerApp.ip = "127.0.0.1"  # noqa: F821
c.ServerApp.port = 8888  # noqa: F821
c.LabApp.news_url = None  # noqa: F821 (no network)
c.ServerApp.allow_root = True  # noqa: F821 (CI runs as root)
c.LabApp.extension_manager = "readonly"  # noqa: F821 (no PyPI look-ups from the test server)
