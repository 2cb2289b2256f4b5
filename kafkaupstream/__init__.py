"""kafkaupstream: an Apache APISIX external plugin runner that produces request bodies to Kafka."""

import os as _os

__version__ = "0.1.0"

#: Set (to anything but "" or "0") to run every module from its ``.py`` source even where the
#: compiled core is installed beside it, as AIOHTTP_NO_EXTENSIONS and MSGPACK_PUREPYTHON do.
NO_EXTENSIONS_ENV = "KAFKAUPSTREAM_NO_EXTENSIONS"

if _os.environ.get(NO_EXTENSIONS_ENV, "") not in ("", "0"):
    # Before any submodule is imported: from here on they load from source (see _sources.py).
    from kafkaupstream._sources import install_sources_only

    install_sources_only()
