"""Notification channels, one module each: webhook, email, sms, mqtt (see ``base``)."""
