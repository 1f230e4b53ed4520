"""`durapipe serve`: the MTHDS protocol over HTTP, backed by durapipe runs on Temporal.

Any MTHDS client (the `mthds` Python package's `MthdsAPIClient`, `pipelex-sdk`'s `PipelexAPIClient`)
sends a method's bundles and inputs; each run is a durapipe run (a Temporal workflow, visible to
`durapipe show` and the Temporal UI), and its status and result are read back from Temporal, so the
server can restart while runs go on.

Example:
    >>> config = ServeConfig(token="s3cret", capabilities=Capabilities.of(pipeline))  # doctest: +SKIP
    >>> asyncio.run(serve(config, host="127.0.0.1", port=8081))  # doctest: +SKIP
"""

from durapipe.serve._app import PROTOCOL_VERSION, ServeConfig, create_app
from durapipe.serve._problems import ServeError
from durapipe.serve._server import serve, serve_config
from durapipe.serve._slow import ClientLimits
from durapipe.serve._trust import CLIENT_SETTINGS, Capabilities, trust_problems

__all__ = [
    "CLIENT_SETTINGS",
    "PROTOCOL_VERSION",
    "Capabilities",
    "ClientLimits",
    "ServeConfig",
    "ServeError",
    "create_app",
    "serve",
    "serve_config",
    "trust_problems",
]
