"""Outgoing mail, shared by approval, delivery and alerts: the message, the mailers (outbox
folder, SMTP, SendGrid) and the queue of system mail sent after commit."""
