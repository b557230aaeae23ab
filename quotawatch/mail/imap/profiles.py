"""Exchange Online's well-known folders by name: its IMAP server announces no SPECIAL-USE flags.

Names as Outlook creates them per mailbox language (Microsoft's localized default folder names;
Exchange's WellKnownFolderName). Compared case-insensitively with the full folder name.
"""

from __future__ import annotations

_NAMES: dict[str, tuple[str, ...]] = {
    "\\Trash": (
        "Deleted Items", "Gelöschte Elemente", "Éléments supprimés", "Elementos eliminados",
        "Posta eliminata", "Verwijderde items", "Elementos Excluídos", "Usunięte elementy",
    ),
    "\\Junk": (
        "Junk Email", "Junk E-Mail", "Junk-E-Mail", "Courrier indésirable", "Correo no deseado",
        "Posta indesiderata", "Ongewenste e-mail", "Lixo Eletrônico", "Wiadomości-śmieci",
    ),
    "\\Sent": (
        "Sent Items", "Gesendete Elemente", "Éléments envoyés", "Elementos enviados",
        "Posta inviata", "Verzonden items", "Itens Enviados", "Elementy wysłane",
    ),
    "\\Drafts": (
        "Drafts", "Entwürfe", "Brouillons", "Borradores", "Bozze", "Concepten", "Rascunhos",
        "Wersje robocze",
    ),
    "\\Archive": ("Archive", "Archiv", "Archives", "Archivo", "Archivio", "Archief", "Arquivo"),
}  # fmt: skip
WELL_KNOWN: dict[str, str] = {
    name.casefold(): flag for flag, names in _NAMES.items() for name in names
}


def exchange_special_use(name: str) -> str | None:
    """The special-use flag Exchange's folder ``name`` stands for, or None."""
    return WELL_KNOWN.get(name.casefold())
