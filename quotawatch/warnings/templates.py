"""The German and English texts of the warning mails and the admin digest (str.format templates)."""

from __future__ import annotations

EN = {
    "subject.warning": "Your mailbox {account} is {percent} full",
    "subject.reminder": "Reminder: your mailbox {account} is {percent} full",
    "subject.all_clear": "Your mailbox {account} has room again ({percent} used)",
    "hello": "Hello,",
    "intro": "your mailbox {account} is {percent} full: {used} of {limit} used, {free} free.",
    "intro.messages": "your mailbox {account} is {percent} full: it holds {used} of at most "
    "{limit} messages.",
    "intro.all_clear": "your mailbox {account} has room again: {percent} used. "
    "There is nothing you need to do. Thank you!",
    "bounce": "When it is full, mail sent to you is returned to the sender and does not reach you.",
    "forecast": "At the current rate the mailbox is full in about {days}.",
    "forecast.soon": "At the current rate the mailbox is full within a day.",
    "day": "1 day",
    "days": "{n} days",
    "folders": "Your largest folders:",
    "col.folder": "Folder",
    "col.size": "Size",
    "col.share": "Share of quota",
    "inbox": "Inbox",
    "cleanup": "The automatic cleanup will free about {size} at its next run:",
    "cleanup.rule": "{rule}: {messages} messages, {size} in {folders}",
    "todo": "What you can do:",
    "todo.trash": 'Empty the folder "{folder}" ({size}): right-click it and choose "Empty folder" '
    '(Thunderbird: "Empty Trash", Outlook: "Empty Folder"). Deleted messages stay there and '
    "use space until it is emptied.",
    "todo.junk": 'Empty the junk folder "{folder}" ({size}) the same way, after a last look for '
    "mail you want to keep.",
    "todo.large": "Delete or archive large messages, above all in {folders}: sort the folder by "
    "size, save attachments you need on your computer, then delete the message and empty the "
    "trash.",
    "why.ratio": "the mailbox passed {threshold}",
    "why.free": "less than {size} is free in the mailbox",
    "footer": "This message was sent automatically because {why}.",
    "noreply": "Please do not reply to it.",
    "footer.remind": "While it stays above this level, you will be reminded {every}.",
    "every.day": "every day",
    "every.days": "every {n} days",
    "every.hours": "every {n} hours",
    "footer.auto": "This message was sent automatically. Please do not reply to it.",
    "digest.subject": "quotawatch: {count} mailboxes above a warning threshold",
    "digest.intro": "These mailboxes are above a warning threshold:",
    "col.account": "Account",
    "col.used": "Used",
    "col.limit": "Limit",
    "col.threshold": "Threshold",
}

DE = {
    "subject.warning": "Ihr Postfach {account} ist zu {percent} voll",
    "subject.reminder": "Erinnerung: Ihr Postfach {account} ist zu {percent} voll",
    "subject.all_clear": "Ihr Postfach {account} hat wieder Platz ({percent} belegt)",
    "hello": "Guten Tag,",
    "intro": "Ihr Postfach {account} ist zu {percent} voll: {used} von {limit} belegt, {free} frei.",
    "intro.messages": "Ihr Postfach {account} ist zu {percent} voll: es enthält {used} von "
    "höchstens {limit} Nachrichten.",
    "intro.all_clear": "Ihr Postfach {account} hat wieder Platz: {percent} belegt. "
    "Sie müssen nichts weiter tun. Vielen Dank!",
    "bounce": "Ist es voll, gehen E-Mails an Sie an den Absender zurück und erreichen Sie nicht.",
    "forecast": "Bei der derzeitigen Zunahme ist das Postfach in etwa {days} voll.",
    "forecast.soon": "Bei der derzeitigen Zunahme ist das Postfach innerhalb eines Tages voll.",
    "day": "einem Tag",
    "days": "{n} Tagen",
    "folders": "Ihre größten Ordner:",
    "col.folder": "Ordner",
    "col.size": "Größe",
    "col.share": "Anteil am Speicherplatz",
    "inbox": "Posteingang",
    "cleanup": "Die automatische Bereinigung gibt beim nächsten Lauf etwa {size} frei:",
    "cleanup.rule": "{rule}: {messages} Nachrichten, {size} in {folders}",
    "todo": "Was Sie tun können:",
    "todo.trash": "Leeren Sie den Ordner „{folder}“ ({size}): Rechtsklick auf den Ordner und "
    "„Ordner leeren“ wählen (Thunderbird: „Papierkorb leeren“, Outlook: „Ordner leeren“). "
    "Gelöschte Nachrichten liegen dort und belegen Platz, bis er geleert wird.",
    "todo.junk": "Leeren Sie ebenso den Spam-Ordner „{folder}“ ({size}), nachdem Sie ihn ein "
    "letztes Mal nach erwünschten Nachrichten durchgesehen haben.",
    "todo.large": "Löschen oder archivieren Sie große Nachrichten, vor allem in {folders}: Ordner "
    "nach Größe sortieren, benötigte Anhänge auf Ihrem Computer speichern, dann die Nachricht "
    "löschen und den Papierkorb leeren.",
    "why.ratio": "Ihr Postfach {threshold} überschritten hat",
    "why.free": "in Ihrem Postfach weniger als {size} frei ist",
    "footer": "Diese Nachricht wurde automatisch verschickt, weil {why}.",
    "noreply": "Bitte antworten Sie nicht darauf.",
    "footer.remind": "Solange es darüber bleibt, erinnern wir Sie {every} daran.",
    "every.day": "täglich",
    "every.days": "alle {n} Tage",
    "every.hours": "alle {n} Stunden",
    "footer.auto": "Diese Nachricht wurde automatisch verschickt. Bitte antworten Sie nicht darauf.",
    "digest.subject": "quotawatch: {count} Postfächer über einer Warnschwelle",
    "digest.intro": "Diese Postfächer liegen über einer Warnschwelle:",
    "col.account": "Konto",
    "col.used": "Belegt",
    "col.limit": "Grenze",
    "col.threshold": "Schwelle",
}

TEXTS = {"en": EN, "de": DE}
