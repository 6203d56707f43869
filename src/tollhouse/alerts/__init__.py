"""Budget alerts: threshold events, channels, signed webhooks, delivery (docs/alerts.md)."""
