"""The door: the app factory, the ASGI layer, the one intake (key, limits, body) and the routes it mounts."""
