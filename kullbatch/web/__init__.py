"""The web side: the REST API, the WebSocket hub and the dashboard page (aiohttp)."""
