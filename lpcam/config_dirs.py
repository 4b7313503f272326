"""Where lpcam's config tree is, and where a user's own configs are searched.

The tree lives at the repository's top level, ``conf/``, beside ``lpcam/``; a wheel carries a copy
inside the package, ``lpcam/conf/`` (``setup.py`` copies it there when the wheel is built). The
entry point reads it by absolute path, so it is found however ``lpcam`` is called.

A folder ``conf/`` in the directory where lpcam runs is searched before the shipped tree (the
search-path plugin in ``hydra_plugins/lpcam_searchpath``): ``conf/backbone/my_net.yaml`` there makes
``backbone=my_net`` work with no flag, and a file named like a shipped option replaces it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
USER_CONF = "conf"  # relative to the working directory


def config_dir() -> Path:
    """The shipped config tree: the wheel's copy inside the package, else the checkout's ``conf/``."""
    for candidate in (PACKAGE / "conf", PACKAGE.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"lpcam's config tree is missing: no config.yaml in {PACKAGE / 'conf'} or {PACKAGE.parent / 'conf'}")


def user_config_dir(cwd: Path | None = None) -> Path | None:
    """``./conf`` of the working directory, when it exists and is not the shipped tree itself."""
    folder = (cwd or Path.cwd()) / USER_CONF
    if not folder.is_dir() or folder.resolve() == config_dir().resolve():
        return None
    return folder.resolve()
