"""Budget alerts: threshold events, channels, signed webhooks, delivery (DESIGN §7)."""
