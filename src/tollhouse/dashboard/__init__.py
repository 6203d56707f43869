"""The admin dashboard at /ui: server-rendered pages over the domains' services
(docs/dashboard.md)."""
