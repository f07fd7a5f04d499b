"""A Kubernetes ConfigMap volume as kubelet lays it out and updates it, on a local disk.

kubelet writes each version of the data into a new timestamped folder, points a symlink
``..data_tmp`` at it, renames that over ``..data`` (atomic), and deletes the old folder;
each key is a symlink ``<key> -> ..data/<key>``. Tests of the config watch use this to
swap the config file the way a cluster does.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def configmap_volume(folder: Path, stamp: str, files: dict[str, str]) -> None:
    """Lay out the volume in ``folder``, or swap it to ``files`` if it is already there."""
    (folder / stamp).mkdir(parents=True)
    for name, content in files.items():
        (folder / stamp / name).write_text(content)
    data = folder / "..data"
    if not data.is_symlink():
        data.symlink_to(stamp)
        for name in files:
            (folder / name).symlink_to(f"..data/{name}")
        return
    old = data.readlink()
    (folder / "..data_tmp").symlink_to(stamp)
    (folder / "..data_tmp").replace(data)
    shutil.rmtree(folder / old)
