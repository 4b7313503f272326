"""Hydra search-path plugin: a ``conf/`` folder in the working directory comes before lpcam's own.

Hydra discovers plugins in the ``hydra_plugins`` namespace package; this one only acts for lpcam's
entry point (whose primary config is lpcam's ``config.yaml``), so other Hydra applications in the
same environment keep their search path.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class LpcamUserConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:
            from lpcam.config_dirs import config_dir, user_config_dir
        except ImportError:  # an lpcam without this module (an older checkout on the path): leave it be
            return
        shipped = str(config_dir())
        if not any(element.path.removeprefix("file://") == shipped for element in search_path.get_path()):
            return  # another Hydra application
        user = user_config_dir()
        if user is not None:
            search_path.prepend(provider="lpcam-user", path=f"file://{user}")
