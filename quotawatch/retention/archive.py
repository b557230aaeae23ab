"""Local Maildir archive: store a message, fsync it, and prove it reads back intact before any delete."""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
from datetime import datetime
from pathlib import Path

from quotawatch.errors import SafetyStop

_UNSAFE = re.compile(r"[\x00-\x1f/\\]")


def maildir_folder_name(folder: str) -> str:
    """A server folder as a Maildir++ sub-folder name: ``Archiv/2023`` → ``Archiv.2023``."""
    parts = [_UNSAFE.sub("_", p).strip(".") or "_" for p in folder.split("/")]
    return ".".join(parts)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    """A Maildir under ``root``: INBOX is the root Maildir, other folders are Maildir++ sub-folders."""

    def __init__(self, root: Path, account: str) -> None:
        self.root = Path(root)
        self.account = account
        self._folders: dict[str, tuple[mailbox.Maildir, Path]] = {}

    def _maildir(self, folder: str) -> tuple[mailbox.Maildir, Path]:
        if folder not in self._folders:
            for sub in ("", "tmp", "new", "cur"):  # an existing empty root is fine too
                (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            top = mailbox.Maildir(self.root, factory=None, create=True)
            if folder.upper() == "INBOX":
                self._folders[folder] = (top, self.root)
            else:
                name = maildir_folder_name(folder)
                box = top.get_folder(name) if name in top.list_folders() else top.add_folder(name)
                self._folders[folder] = (box, self.root / f".{name}")
        return self._folders[folder]

    def store(self, folder: str, data: bytes, internaldate: datetime | None = None) -> Path:
        """Add ``data`` to the folder's Maildir, fsync file and directory, re-read and compare.

        Raises SafetyStop when anything fails; the caller then deletes nothing of this batch.
        """
        where = f"archive {self.root}"
        try:
            box, directory = self._maildir(folder)
            path = directory / "new" / box.add(data)
            path.chmod(0o600)  # mailbox creates files 0666 & umask; archived mail is private
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if internaldate is not None:
                stamp = internaldate.timestamp()
                os.utime(path, (stamp, stamp))
            _fsync_dir(path.parent)
            copy = path.read_bytes()
        except OSError as exc:
            raise SafetyStop(
                self.account,
                f"{where}: cannot write a message from {folder}: {exc.strerror or exc}",
            ) from None
        except mailbox.Error as exc:
            raise SafetyStop(self.account, f"{where}: {exc}") from None
        if len(copy) != len(data) or hashlib.sha256(copy).digest() != hashlib.sha256(data).digest():
            raise SafetyStop(
                self.account,
                f"{where}: the copy of a message from {folder} does not read back intact "
                f"({len(copy)} of {len(data)} bytes)",
            )
        return path
